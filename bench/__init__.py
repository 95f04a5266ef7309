"""The benchmark suite of Cronraft (bench/README.md): one script per workload, sharing `common`."""
