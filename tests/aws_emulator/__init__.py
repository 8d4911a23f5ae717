"""Local emulators of the AWS job APIs our executors call (test infrastructure, not part of tessera)."""

from aws_emulator.runner import Image
from aws_emulator.server import AwsJobEmulator

__all__ = ["AwsJobEmulator", "Image"]
