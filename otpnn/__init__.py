"""otpnn: parallel neural-network training as an OTP-style supervision tree of actors."""

__version__ = "0.1.0"
