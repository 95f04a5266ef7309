"""Who may call a node, and over what (docs/security.md). This step only moves daemon/security.py here as
authn.py, so that `git log --follow` keeps its history; the split by concern follows."""
