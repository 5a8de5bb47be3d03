"""``python -m otpnn``: the same as the ``otpnn`` console script."""

from otpnn.entry import run

if __name__ == "__main__":  # process actors' children import the main module too
    run()
