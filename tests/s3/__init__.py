"""Tests against real S3 servers (moto, SeaweedFS) on 127.0.0.1, with a fault-injecting proxy."""
