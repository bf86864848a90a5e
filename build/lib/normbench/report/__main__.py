"""``python -m normbench.report DIR [DIR ...]`` (see normbench.report.pipeline)."""

from normbench.report.pipeline import main

if __name__ == "__main__":
    main()
