"""The strict EC2 stand-in after registration: DescribeImages (states a test steers, ids,
owners, filters, pages), DeregisterImage, CreateTags and snapshots in use."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import AwsStandIn
from tests.support.ec2_images import ImageFate, StateReason
from tests.support.ec2_rules import ImageState

from .ec2_helpers import code_of, completed_snapshot, describe, put_manifest

# -- DescribeImages: state, filters, owners ---------------------------------------------


def test_images_are_pending_then_available(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(Name="slow", ImageLocation=put_manifest(aws))["ImageId"]
    assert describe(ec2, image_id)["State"] == "pending"
    assert describe(ec2, image_id)["State"] == "available"


def test_available_after_n_describes(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    aws.ec2.image_fate = ImageFate(pending_describes=3)
    image_id = ec2.register_image(Name="three", ImageLocation=put_manifest(aws))["ImageId"]
    assert [describe(ec2, image_id)["State"] for _ in range(4)] == ["pending"] * 3 + ["available"]
    aws.ec2.make_available_after(image_id, 1)
    assert [describe(ec2, image_id)["State"] for _ in range(2)] == ["pending", "available"]


def test_an_image_can_be_made_to_fail(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(Name="doomed", ImageLocation=put_manifest(aws))["ImageId"]
    aws.ec2.fail_image(image_id, after=1, reason=StateReason("Client.InvalidManifest", "bad"))
    assert describe(ec2, image_id)["State"] == "pending"
    failed = describe(ec2, image_id)
    assert failed["State"] == "failed"
    assert failed["StateReason"] == {"Code": "Client.InvalidManifest", "Message": "bad"}
    by_state = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "state", "Values": ["failed"]}]
    )
    assert [i["ImageId"] for i in by_state["Images"]] == [image_id]


def test_images_registered_after_a_failing_fate_fail(aws: AwsStandIn) -> None:
    aws.ec2.image_fate = ImageFate(1, ImageState.FAILED)
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(Name="fails-later", ImageLocation=put_manifest(aws))["ImageId"]
    assert [describe(ec2, image_id)["State"] for _ in range(2)] == ["pending", "failed"]
    assert describe(ec2, image_id)["StateReason"]["Code"] == "Server.InternalError"


def test_describe_refuses_bad_and_unknown_ids(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    with pytest.raises(ClientError) as error:
        ec2.describe_images(ImageIds=["image-1"])
    assert code_of(error) == "InvalidAMIID.Malformed"
    with pytest.raises(ClientError) as error:
        ec2.describe_images(ImageIds=["ami-0123456789abcdef0"])
    assert code_of(error) == "InvalidAMIID.NotFound"
    image_id = ec2.register_image(Name="gone", ImageLocation=put_manifest(aws))["ImageId"]
    ec2.deregister_image(ImageId=image_id)
    assert ec2.describe_images(ImageIds=[image_id])["Images"] == []


def test_filters_and_owners(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    with pytest.raises(ClientError) as error:  # refused even with nothing to filter
        ec2.describe_images(Filters=[{"Name": "colour", "Values": ["red"]}])
    assert code_of(error) == "InvalidParameterValue"
    location = put_manifest(aws)
    a = ec2.register_image(Name="app-1.0", ImageLocation=location, Architecture="x86_64")["ImageId"]
    b = ec2.register_image(Name="app-2.0", ImageLocation=location, Architecture="arm64")["ImageId"]
    ec2.create_tags(Resources=[b], Tags=[{"Key": "release", "Value": "yes"}])

    def ids(**query: Any) -> list[str]:
        return sorted(i["ImageId"] for i in ec2.describe_images(**query)["Images"])

    assert ids(Owners=["self"]) == sorted([a, b])
    assert ids(
        Owners=[aws.account_id], Filters=[{"Name": "name", "Values": ["app-?.0"]}]
    ) == sorted([a, b])
    assert ids(Filters=[{"Name": "architecture", "Values": ["arm64"]}]) == [b]
    assert ids(Filters=[{"Name": "tag:release", "Values": ["yes"]}]) == [b]
    assert ids(Filters=[{"Name": "root-device-type", "Values": ["instance-store"]}]) == sorted(
        [a, b]
    )
    assert ids(Filters=[{"Name": "manifest-location", "Values": [location]}]) == sorted([a, b])
    assert ids(Owners=["444455556666"]) == []
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"Filters": [{"Name": "colour", "Values": ["red"]}]}, "InvalidParameterValue"),
        ({"Owners": ["someone"]}, "InvalidUserID.Malformed"),
        ({"ImageIds": [a], "MaxResults": 5}, "InvalidParameterCombination"),
    ]
    for query, code in refusals:
        with pytest.raises(ClientError) as error:
            ec2.describe_images(**query)
        assert code_of(error) == code


def test_describe_pages(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    location = put_manifest(aws)
    made = {
        ec2.register_image(Name=f"page-{n}", ImageLocation=location)["ImageId"] for n in range(5)
    }
    pages = list(
        ec2.get_paginator("describe_images").paginate(
            Owners=["self"], PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["Images"]) for p in pages] == [2, 2, 1]
    assert {image.id for image in aws.ec2.images()} == made
    assert {i["ImageId"] for p in pages for i in p["Images"]} == made


# -- DeregisterImage, tags, snapshots in use --------------------------------------------


def test_deregister_refusals(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(Name="once", ImageLocation=put_manifest(aws))["ImageId"]
    assert ec2.deregister_image(ImageId=image_id)["Return"] is True
    for bad, code in [
        (image_id, "InvalidAMIID.Unavailable"),
        ("ami-0123456789abcdef0", "InvalidAMIID.NotFound"),
        ("ami-xyz", "InvalidAMIID.Malformed"),
    ]:
        with pytest.raises(ClientError) as error:
            ec2.deregister_image(ImageId=bad)
        assert code_of(error) == code


def test_deregister_can_delete_the_snapshots(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    snapshot_id = completed_snapshot(aws)
    image_id = ec2.register_image(
        Name="with-snapshot",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]
    with pytest.raises(ClientError) as error:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert code_of(error) == "InvalidSnapshot.InUse"
    answer = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    assert answer["DeleteSnapshotResults"] == [{"SnapshotId": snapshot_id, "ReturnCode": "success"}]
    with pytest.raises(ClientError) as error:
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    assert code_of(error) == "InvalidSnapshot.NotFound"


def test_create_tags(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(Name="tagged", ImageLocation=put_manifest(aws))["ImageId"]
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": "k", "Value": "v"}])
    assert describe(ec2, image_id)["Tags"] == [{"Key": "k", "Value": "v"}]
    for resources, tags, code in [
        ([image_id], [{"Key": "aws:reserved", "Value": "v"}], "InvalidParameterValue"),
        ([image_id], [{"Key": "k" * 129, "Value": "v"}], "InvalidParameterValue"),
        (["ami-0123456789abcdef0"], [{"Key": "k", "Value": "v"}], "InvalidAMIID.NotFound"),
    ]:
        with pytest.raises(ClientError) as error:
            ec2.create_tags(Resources=resources, Tags=tags)
        assert code_of(error) == code
