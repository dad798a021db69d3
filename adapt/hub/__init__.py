"""The Hugging Face Hub: names (`ids`), a fast reachability check (`reachability`) and pushing a finished run
(`push`). `python -m adapt.hub push ...` is the command (`__main__`)."""
