"""Test infrastructure shared by several suites: stand-ins for AWS services and their fixtures.

* `aws` — moto (S3, STS, EC2, EBS) on 127.0.0.1 with the strict stand-ins installed.
* `ec2_standin` — RegisterImage, DescribeImages, DeregisterImage and tags as AWS checks them.
* `ebs_standin` — the EBS direct APIs (StartSnapshot … GetSnapshotBlock) as AWS checks them.
* `aws_fixtures` — pytest fixtures starting all of it once per session, reset between tests.

The stand-ins' own tests live in tests/standins/.
"""
