"""`python train.py norm=layer model=lstm` — see README.md; the work is in normbench.run.train."""

from pathlib import Path

from normbench.run.train import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "conf")
