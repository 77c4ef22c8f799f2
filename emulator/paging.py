"""The pages the local AWS answers EC2's, SSM's and ECS's filtered listings in, as AWS may
(ECS_AMI_EMULATOR_PAGE_SIZE items, the first page empty)."""

from __future__ import annotations

from typing import Any

from run_command import SsmError
from settings import PAGE_SIZE, PAGE_TOKEN


# EC2's filtered Describe calls the local AWS pages: the item set of the answer, and the id
# parameter with which EC2 does not page.
EC2_PAGED = {"EC2.DescribeInstances": ("reservationSet", "InstanceId"),
             "EC2.DescribeImages": ("imagesSet", "ImageId"),
             "EC2.DescribeSnapshots": ("snapshotSet", "SnapshotId"),
             "EC2.DescribeVolumes": ("volumeSet", "VolumeId")}


def page_items(items: list[Any], token: str | None) -> tuple[list[Any], str | None]:
    """The page a token asks for: none asks for the first, which is empty and carries a token."""
    if token is None:
        return [], PAGE_TOKEN + "0"
    offset = int(token[len(PAGE_TOKEN):])
    following = offset + PAGE_SIZE
    return items[offset:following], (PAGE_TOKEN + str(following) if following < len(items) else None)


def page_of(answer: dict[str, Any], list_key: str, token_key: str, token: str | None) -> dict[str, Any]:
    if token is not None and not token.startswith(PAGE_TOKEN):
        raise SsmError("InvalidNextToken", f"the token {token} is not valid")
    page, next_token = page_items(answer.get(list_key) or [], token)
    paged = {k: v for k, v in answer.items() if k != token_key}
    paged[list_key] = page
    if next_token is not None:
        paged[token_key] = next_token
    return paged
