"""ECR as AWS documents it where moto differs (installed by patches.py): an image's digest is the
SHA-256 of its manifest, BatchGetImage honours acceptedMediaTypes and names a missing image as it
was asked for, a tag pushed again moves and leaves the earlier image untagged, and each
authorization token is the caller's own, valid for 12 hours. The tokens issued are kept here, with
the principal each was issued to: the registry API (emulator/registry.py) authorizes a pull as
that principal."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ecr.exceptions import RepositoryNotFoundException

from messages import REQUEST

# "Authorization tokens are valid for 12 hours"
# (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_AuthorizationData.html).
TOKEN_LIFETIME = 12 * 3600
# The password of each token GetAuthorizationToken issued -> who it was issued to (a
# `authorization.Principal`, or "admin"), its registry and region, and when it expires.
ECR_TOKENS: dict[str, dict[str, Any]] = {}


def manifest_digest(manifest: str | bytes) -> str:
    data = manifest.encode("utf-8") if isinstance(manifest, str) else manifest
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type_of(image: Any) -> str:
    """The manifest's media type: as pushed, else the manifest's own mediaType."""
    if image.image_manifest_media_type:
        return image.image_manifest_media_type
    try:
        return json.loads(image.image_manifest).get("mediaType", "")
    except ValueError:
        return ""


class ImageDigestDoesNotMatchException(ServiceException):
    code = "ImageDigestDoesNotMatchException"


def digest_of_manifest(self: Any) -> None:
    """Image._create_digest as ECR computes a digest: the SHA-256 of the manifest as pushed
    (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_ImageIdentifier.html: "The
    sha256 digest of the image manifest"); moto hashes the layers' digests joined."""
    self._image_digest = manifest_digest(self.image_manifest)


def as_ecr_checks_pushed_digests(original: Any) -> Any:
    """PutImage's imageDigest must be the manifest's digest, else
    ImageDigestDoesNotMatchException
    (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_PutImage.html); moto takes
    any."""

    def put_image(self: Any, repository_name: str, image_manifest: str, image_tag: str,
                  image_manifest_mediatype: str | None = None, digest: str | None = None) -> Any:
        if digest and digest != manifest_digest(image_manifest):
            raise ImageDigestDoesNotMatchException(
                f"The specified image digest {digest} does not match the digest that Amazon ECR "
                f"calculated for the image ({manifest_digest(image_manifest)})")
        return original(self, repository_name, image_manifest, image_tag, image_manifest_mediatype, digest)

    return put_image


def as_ecr_moves_tags(original: Any) -> Any:
    """A manifest pushed under a tag another image has, in a repository of mutable tags, takes
    the tag; the earlier image stays in the repository, untagged, and can still be pulled by its
    digest until a lifecycle policy or a deletion removes it
    (https://docs.aws.amazon.com/AmazonECR/latest/userguide/LifecyclePolicies.html: rules on
    `untagged` images). moto deletes the earlier image when the tag was its only one."""

    def put_image(self: Any, repository_name: str, image_manifest: str, image_tag: str,
                  image_manifest_mediatype: str | None = None, digest: str | None = None) -> Any:
        repository = self.repositories.get(repository_name)
        if (repository is not None and image_tag and not repository.is_tag_immutable()
                and not getattr(repository, "image_tag_mutability_exclusion_filters", None)):
            for image in repository.images:
                if image_tag in image.image_tags and image.image_manifest != image_manifest:
                    image.image_tags.remove(image_tag)
                    image.image_tag = image.image_tags[-1] if image.image_tags else None
        return original(self, repository_name, image_manifest, image_tag, image_manifest_mediatype, digest)

    return put_image


def as_ecr_gets_images(original: Any) -> Any:
    """BatchGetImage as the API reference describes it
    (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html,
    .../API_ImageFailure.html), where moto differs:

    * an image not found is a failure whose imageId is the one asked for (moto answers
      `{"imageTag": "null"}` for a digest); so are an image id without tag and digest
      (MissingDigestAndTag), a malformed digest (InvalidImageDigest) and a tag and digest of
      different images (ImageTagDoesNotMatchDigest);
    * with acceptedMediaTypes, an image whose manifest is of another media type is a failure
      `UnsupportedImageType` (moto ignores the parameter). ECR can convert a Docker schema 2
      manifest to schema 1 for a client that accepts only that; the local AWS converts nothing;
    * each image answered carries the imageId it was asked by (moto answers the image's last tag);
    * a registryId that is not the local account's names a registry the local AWS does not have:
      RepositoryNotFoundException for it (moto answers the local repository of that name)."""

    def batch_get_image(self: Any) -> Any:
        name = self._get_param("repositoryName")
        registry = self._get_param("registryId")
        image_ids = self._get_param("imageIds")
        accepted = self._get_param("acceptedMediaTypes")
        backend = self.ecr_backend
        if registry and registry != backend.account_id:
            raise RepositoryNotFoundException(name, registry)
        if name not in backend.repositories or not image_ids:
            return original(self)  # moto's RepositoryNotFoundException or missing imageIds
        repository = backend.repositories[name]
        images: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for image_id in image_ids:
            digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
            problem = None
            if digest is None and tag is None:
                problem = ("MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null")
            elif digest is not None and not re.fullmatch(r"[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+", digest):
                problem = ("InvalidImageDigest", "Invalid request parameters: image digest should satisfy the "
                                                 "regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'")
            found = None if problem else next(
                (i for i in repository.images if (digest is None or i.get_image_digest() == digest)
                 and (tag is None or tag in i.image_tags)), None)
            if found is None and problem is None and digest is not None and tag is not None and any(
                    i.get_image_digest() == digest for i in repository.images):
                problem = ("ImageTagDoesNotMatchDigest", "Invalid request parameters: given tag does not map to "
                                                         "the given digest")
            if problem is not None or found is None:
                code, reason = problem or ("ImageNotFound", "Requested image not found")
                failures.append({"imageId": dict(image_id), "failureCode": code, "failureReason": reason})
                continue
            media_type = media_type_of(found)
            if accepted and media_type not in accepted:
                failures.append({"imageId": dict(image_id), "failureCode": "UnsupportedImageType",
                                 "failureReason": f"The image's manifest is of media type {media_type}, "
                                                  f"which is not among the accepted media types {accepted}"})
                continue
            answered = {"imageDigest": found.get_image_digest(), **({"imageTag": tag} if tag else {})}
            images.append({"registryId": repository.registry_id, "repositoryName": name,
                           "imageId": answered, "imageManifest": found.image_manifest,
                           "imageManifestMediaType": media_type})
        return ActionResult({"images": images, "failures": failures})

    return batch_get_image


def as_ecr_issues_own_tokens(original: Any) -> Any:
    """GetAuthorizationToken: each call is a new token, of the caller's credentials, that expires
    12 hours later (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html:
    "An authorization token represents your IAM authentication credentials"). moto answers one
    fixed password per account, expired in 2015. Each token is kept with the principal it was
    issued to (REQUEST.principal, set by the router)."""

    def get_authorization_token(self: Any) -> Any:
        registry_ids = self._get_param("registryIds") or [self.current_account]
        data = []
        for registry_id in registry_ids:
            password = secrets.token_urlsafe(48)
            expires = time.time() + TOKEN_LIFETIME
            ECR_TOKENS[password] = {"principal": getattr(REQUEST, "principal", None), "registry": registry_id,
                                    "region": self.region, "expires": expires}
            data.append({
                "authorizationToken": base64.b64encode(f"AWS:{password}".encode()).decode(),
                "expiresAt": expires,
                "proxyEndpoint": f"https://{registry_id}.dkr.ecr.{self.region}.amazonaws.com",
            })
        return ActionResult({"authorizationData": data})

    return get_authorization_token
