"""Load generator for any OpenAI-compatible chat-completions server (see jaxserve/bench/load_generator.py).

.venv/bin/python benchmarks/load_generator.py --base-url http://127.0.0.1:8000 --concurrency 1 4 16 64 --ignore-eos
"""

from jaxserve.bench.load_generator import main

if __name__ == "__main__":
    main()
