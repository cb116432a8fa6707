"""Tests of the Stripe emulator, through the real ``stripe`` SDK over HTTP."""
