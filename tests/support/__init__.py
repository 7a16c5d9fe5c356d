"""Helpers the suites import (fixtures stay in conftest.py files).

* ``common``: where things are (REPO, SHARED, CLASSIC), identities, sample images.
* ``bundling``: the library's records built for a test identity (``bundle_for``).
* ``errors``: an error as the command line prints it (``cli_text``).
* ``bundles``, ``manifests``, ``tars``: hand-built and hostile bundles, manifests, tar streams.
* ``openssl``: independent cross-checks with the openssl command.
* ``s3servers``, ``s3proxy``, ``s3bundles``: S3 servers on 127.0.0.1, the recording
  fault-injecting proxy, and helpers of the S3 tests.
* ``aws``, ``aws_fixtures``, ``ec2_*``, ``ebs_*``, ``moto_patches``: moto (S3, STS, EC2,
  EBS) with strict stand-ins for what moto accepts and AWS refuses.
* ``volumes``, ``volume_runner``, ``ext2read``, ``imdsserver``: the bundle-vol tests'
  synthetic volume, reading ext2/3/4 images without mounting, a small IMDS.
"""
