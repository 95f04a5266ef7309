"""Rendering of the checker's verdict: verdict.json and report.md in a run directory, and one Markdown
table across runs.

    .venv/bin/python -m tests.fault.report RUN_DIR [RUN_DIR ...]   # prints the table across runs

`aggregate()` reads each run's verdict.json when it exists (a passed run keeps little else, see
tests/fault/run.py), and judges the directory afresh otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.fault.checker import Verdict, check


def write(run_dir: Path, verdict: Verdict) -> tuple[Path, Path]:
    """Write verdict.json and report.md into `run_dir`; return their paths."""
    run_dir = Path(run_dir)
    vpath, rpath = run_dir / "verdict.json", run_dir / "report.md"
    vpath.write_text(verdict.to_json() + "\n", encoding="utf-8")
    rpath.write_text(render(verdict), encoding="utf-8")
    return vpath, rpath


write_reports = write


# ------------------------------------------------------------------------------------- formatting


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{float(x) * 100:.3g} %"


def _pcts(d: Any, unit: str = "s") -> str:
    if not isinstance(d, dict) or d.get("max") is None:
        return "-"
    return f"{_num(d.get('p50'))} / {_num(d.get('p99'))} / {_num(d.get('max'))} {unit}"


def _value(v: Any) -> str:
    if isinstance(v, dict):
        if set(v) == {"p50", "p99", "max"}:
            return f"p50/p99/max {_pcts(v)}"
        return ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v) or "-"
    return _num(v)


def _key_numbers(rule: str, c: dict[str, Any]) -> str:
    g = c.get
    if rule == "R1":
        return (
            f"{g('on_time', 0)}/{g('fires', 0)} on time ({_pct(g('on_time_rate'))}), late {g('late', 0)}, "
            f"lost {g('lost', 0)}; lateness p50/p99/max {_pcts(g('lateness_s'))}"
        )
    if rule == "R2":
        return f"dup_commits {g('dup_commits', 0)}"
    if rule == "R3":
        return f"stale_accepts {g('stale_accepts', 0)}, token_regressions {g('token_regressions', 0)}"
    if rule == "R4":
        return (
            f"dup_exec {g('dup_exec', 0)} ({_pct(g('rate'))}, 95 % bound {_pct(g('upper95'))}); "
            f"unwanted {g('unwanted_dup_exec', 0)} (bound {_pct(g('unwanted_upper95'))})"
        )
    if rule == "R5":
        return (
            f"lost_tasks {g('lost_tasks', 0)}, recovered {g('recovered', 0)}, "
            f"unexpected {g('unexpected', 0)}, failed_but_present {g('failed_but_present', 0)}"
        )
    if rule == "R6":
        return f"concurrent_dup {g('concurrent_dup', 0)}"
    if rule == "R7":
        return (
            f"multi_dispatch_terms {g('multi_dispatch_terms', 0)}, "
            f"dispatch_before_grant {g('dispatch_before_grant', 0)}"
        )
    if rule == "R8":
        return (
            f"{g('leader_faults', 0)} leader fault(s); recovery p50/p99/max {_pcts(g('recovery_s'))}; "
            f"backlog {_pcts(g('backlog_s'))}; unrecovered {g('unrecovered', 0)}, "
            f"undrained {g('undrained', 0)}"
        )
    if rule == "R9":
        return f"diverged_nodes {g('diverged_nodes', 0)}, log_conflicts {g('log_conflicts', 0)}"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(v: Verdict) -> str:
    """report.md for one run."""
    s = v.summary
    out = [
        f"# Fault run {v.scenario}: {'PASS' if v.ok else 'FAIL'}",
        "",
        f"seed {v.seed}, profile {v.profile or '-'}, mode {v.mode or '-'}, run dir `{v.run_dir}`",
        "",
        "## Summary",
        "",
        "| what | value |",
        "|---|---|",
    ]
    ledger = s.get("ledger") or {}
    rows = [
        ("judged fires n(F)", s.get("fires")),
        ("tasks with judged fires", s.get("tasks_judged")),
        ("ledger starts / ends", f"{ledger.get('starts', '-')} / {ledger.get('ends', '-')}"),
        ("starts without end", ledger.get("starts_without_end")),
        ("API calls", _value(s.get("api_calls") or {})),
        ("faults (starts)", _value(s.get("faults") or {})),
        ("term churn (distinct epoch terms)", s.get("term_churn")),
        ("judged window / run", f"{_num(s.get('window_s'))} s / {_num(s.get('run_s'))} s"),
        ("harness CPU", "-" if s.get("harness_cpu_s") is None else f"{_num(s.get('harness_cpu_s'))} s"),
    ]
    out += [f"| {k} | {_cell(_num(val) if not isinstance(val, str) else val)} |" for k, val in rows]
    out += ["", "## Rules", "", "| rule | check | verdict | key numbers |", "|---|---|---|---|"]
    for key, r in v.rules.items():
        verdict = "pass" if r.passed else "**FAIL**"
        out.append(f"| {key} | {r.title} | {verdict} | {_cell(_key_numbers(key, r.counts))} |")
    for key, r in v.rules.items():
        out += ["", f"### {key} {r.title}: {'pass' if r.passed else 'FAIL'}", ""]
        out += [f"- {k}: {_value(val)}" for k, val in r.counts.items()]
        out += [f"- note: {n}" for n in r.notes]
        if r.examples:
            out += ["", "Examples:", "", "```"]
            out += [json.dumps(e, sort_keys=True, default=str) for e in r.examples]
            out += ["```"]
    if v.warnings:
        out += ["", "## Warnings", ""]
        out += [f"- {w}" for w in v.warnings]
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------- aggregate


def load_verdict(run_dir: Path) -> Verdict:
    """The run's verdict.json, or a fresh judgement when there is none."""
    path = Path(run_dir) / "verdict.json"
    if path.exists():
        return Verdict.from_json(path.read_text(encoding="utf-8"))
    return check(Path(run_dir))


def _fmt_s(value: object) -> str:
    return f"{value:.2f} s" if isinstance(value, (int, float)) else "-"


def aggregate(run_dirs: Iterable[Path]) -> str:
    """One Markdown table, a row per run."""
    out = [
        "| scenario | fires | lost | duplicate runs (rate, 95 % bound) | of which unexplained (bound) "
        "| stale accepts | on-time % | lateness p99 / max | recovery p50/p99/max | verdict |",
        "|---|---:|---:|---|---|---:|---:|---|---|---|",
    ]
    for d in run_dirs:
        try:
            v = load_verdict(Path(d))
        except (OSError, ValueError, KeyError) as exc:
            out.append(f"| {_cell(str(d))} | - | - | - | - | - | - | - | - | unreadable: {_cell(str(exc))} |")
            continue
        r1 = v.rules["R1"].counts if "R1" in v.rules else {}
        r3 = v.rules["R3"].counts if "R3" in v.rules else {}
        r4 = v.rules["R4"].counts if "R4" in v.rules else {}
        r8 = v.rules["R8"].counts if "R8" in v.rules else {}
        failed = [k for k, r in v.rules.items() if not r.passed]
        dups = f"{r4.get('dup_exec', '-')} ({_pct(r4.get('rate'))}, ≤ {_pct(r4.get('upper95'))})"
        unexplained = f"{r4.get('unwanted_dup_exec', '-')} (≤ {_pct(r4.get('unwanted_upper95'))})"
        late = r1.get("lateness_s")
        lateness = f"{_fmt_s(late.get('p99'))} / {_fmt_s(late.get('max'))}" if isinstance(late, dict) else "-"
        out.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    f"{v.scenario} (seed {v.seed}, {v.profile})",
                    _num(r1.get("fires")),
                    _num(r1.get("lost")),
                    dups,
                    unexplained,
                    _num(r3.get("stale_accepts")),
                    _pct(r1.get("on_time_rate")),
                    lateness,
                    _pcts(r8.get("recovery_s")),
                    "pass" if v.ok else "FAIL " + ",".join(failed),
                )
            )
            + " |"
        )
    return "\n".join(out) + "\n"


def sweep(run_dirs: Iterable[Path]) -> str:
    """One Markdown table, a row per scenario, summed over its runs (seeds): what a sweep reports."""
    rows: dict[str, dict[str, Any]] = {}
    for d in run_dirs:
        try:
            v = load_verdict(Path(d))
        except (OSError, ValueError, KeyError):
            continue
        row = rows.setdefault(
            v.scenario,
            {
                "seeds": [],
                "failed": [],
                "fires": 0,
                "lost": 0,
                "dups": 0,
                "unexplained": 0,
                "stale": 0,
                "rec": [],
            },
        )
        r1 = v.rules["R1"].counts if "R1" in v.rules else {}
        r3 = v.rules["R3"].counts if "R3" in v.rules else {}
        r4 = v.rules["R4"].counts if "R4" in v.rules else {}
        r8 = v.rules["R8"].counts if "R8" in v.rules else {}
        row["seeds"].append(v.seed)
        if not v.ok:
            row["failed"].append(f"{v.seed}: " + ",".join(k for k, r in v.rules.items() if not r.passed))
        row["fires"] += int(r1.get("fires") or 0)
        row["lost"] += int(r1.get("lost") or 0)
        row["dups"] += int(r4.get("dup_exec") or 0)
        row["unexplained"] += int(r4.get("unwanted_dup_exec") or 0)
        row["stale"] += int(r3.get("stale_accepts") or 0)
        rec = r8.get("recovery_s")
        if isinstance(rec, dict) and rec.get("max") is not None:
            row["rec"].append(float(rec["max"]))
    out = [
        "| scenario | runs (seeds) | fires | lost | duplicate runs | of which unexplained | stale accepts "
        "| recovery max (worst run) | failed runs |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for key in sorted(rows, key=lambda k: int(k[1:]) if k[1:].isdigit() else 0):
        r = rows[key]
        out.append(
            "| "
            + " | ".join(
                _cell(str(x))
                for x in (
                    key,
                    f"{len(r['seeds'])} ({', '.join(str(s) for s in r['seeds'])})",
                    r["fires"],
                    r["lost"],
                    r["dups"],
                    r["unexplained"],
                    r["stale"],
                    _fmt_s(max(r["rec"])) if r["rec"] else "-",
                    "; ".join(r["failed"]) or "none",
                )
            )
            + " |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m tests.fault.report RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    dirs = [Path(a) for a in args]
    print(sweep(dirs) + "\n" + aggregate(dirs), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
