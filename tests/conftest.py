"""Test session set-up: 8 fake CPU devices, so sharding tests can build meshes of 1, 2, 4 or 8 devices.

XLA reads the flag when the backend starts, so it is set here, before any test module imports jax.
"""

import os

flag = "--xla_force_host_platform_device_count=8"
if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
