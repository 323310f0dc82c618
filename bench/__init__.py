"""The benchmark suite: `python -m bench` (see bench/README.md). Talks only to 127.0.0.1."""
