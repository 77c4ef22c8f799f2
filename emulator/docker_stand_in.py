#!/usr/bin/python3
"""A stand-in for the docker CLI of the ECS-optimized images, in the local AWS's seeded images at
/usr/bin/docker (emulator/seed.py): this machine has no Docker daemon, and an instance here is an
overlay of its root. It does what docker does for the commands a build runs, with docker's output
where practical, and refuses any other loudly:

    docker login [-u USER | --username USER] (--password-stdin | -p PASSWORD) [SERVER]
    docker logout [SERVER]
    docker pull [-q] REFERENCE                 (REFERENCE: NAME[:TAG] or NAME@sha256:DIGEST)
    docker tag SOURCE TARGET
    docker image inspect [-f FORMAT] IMAGE...  (also docker inspect)
    docker images [--digests] [-q] [REPOSITORY[:TAG]]   (also docker image ls)

Registries are reached through the local AWS's distribution API,
`$ECS_AMI_LOCAL_AWS/ecs-ami-local/registry/{HOST}/v2/...` (emulator/registry.py), with the
credentials `docker login` kept in $DOCKER_CONFIG/config.json (default ~/.docker) as Basic
authentication, or the registry's bearer-token challenge. A pull checks the manifest's digest
when the reference names one, refuses an index (a real pull would pick a platform; the product
pulls a platform manifest by digest), and checks every blob's digest and size before it keeps it
under /var/lib/docker/stand-in (ECS_AMI_DOCKER_DATA_ROOT overrides /var/lib/docker): that is the
instance's file system, so an image made from the instance has the pulled images, and `docker
image inspect` and `docker images` answer from there, without the network. Only the standard
library is used: the image's python3 is the machine's."""

import base64
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

DATA_ROOT = os.environ.get("ECS_AMI_DOCKER_DATA_ROOT", "/var/lib/docker")
STORE = os.path.join(DATA_ROOT, "stand-in")
IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
HUB = "docker.io"
HUB_SERVER = "https://index.docker.io/v1/"


class Failure(Exception):
    """Printed to stderr as it is; the command exits 1."""


# --- references ----------------------------------------------------------------------------------

class Reference:
    """An image reference normalized as docker does: no registry host (a first component with no
    '.' or ':' and not 'localhost') means Docker Hub, whose one-component names are library/'s;
    no tag and no digest means the tag `latest`."""

    def __init__(self, text, default_tag=True):
        name, _, digest = text.partition("@")
        if digest and not DIGEST.fullmatch(digest):
            raise Failure(f'invalid reference format: "{text}" (digest {digest} is not sha256)')
        tag = None
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
            if not TAG.fullmatch(tag):
                raise Failure(f'invalid reference format: "{text}"')
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, path = first, rest
        else:
            host, path = HUB, name
        if host in ("index.docker.io", "registry-1.docker.io"):
            host = HUB
        if host == HUB and "/" not in path:
            path = "library/" + path
        if not NAME.fullmatch(path):
            raise Failure(f'invalid reference format: repository name ({path}) must be lowercase')
        if tag is None and not digest and default_tag:
            tag = "latest"
        self.host, self.path, self.tag, self.digest = host, path, tag, digest or None

    @property
    def registry_host(self):
        """The host whose distribution API serves the repository (Docker Hub's is registry-1)."""
        return "registry-1.docker.io" if self.host == HUB else self.host

    @property
    def familiar_name(self):
        if self.host == HUB:
            return self.path[len("library/"):] if self.path.startswith("library/") else self.path
        return f"{self.host}/{self.path}"

    @property
    def familiar(self):
        if self.digest:
            return f"{self.familiar_name}@{self.digest}"
        return f"{self.familiar_name}:{self.tag}"

    @property
    def canonical(self):
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{self.host}/{self.path}{suffix}"


# --- credentials -------------------------------------------------------------------------------

def config_path(config_dir):
    directory = config_dir or os.environ.get("DOCKER_CONFIG") or os.path.join(
        os.environ.get("HOME") or "/root", ".docker")
    return os.path.join(directory, "config.json")


def read_config(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise Failure(f"Error: loading config file: {path}: {error}") from error


def write_config(path, config):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix="config.json")
    with os.fdopen(handle, "w") as out:
        json.dump(config, out, indent="\t")
        out.write("\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def server_host(server):
    """A config.json key as a host name (docker strips the scheme and path)."""
    host = re.sub(r"^[a-z]+://", "", server).split("/", 1)[0]
    return HUB if host in ("index.docker.io", "registry-1.docker.io", HUB) else host


def basic_auth_for(config, host):
    for server, entry in (config.get("auths") or {}).items():
        if server_host(server) == host and entry.get("auth"):
            return entry["auth"]
    return None


# --- the distribution API ------------------------------------------------------------------------

def local_aws():
    endpoint = os.environ.get("ECS_AMI_LOCAL_AWS")
    if not endpoint:
        raise Failure("Cannot connect to the Docker daemon: the docker stand-in needs ECS_AMI_LOCAL_AWS "
                      "(the local AWS's address, set in every process of an instance)")
    return endpoint.rstrip("/")


class RegistryError(Exception):
    def __init__(self, status, code, message, url):
        super().__init__(message)
        self.status, self.code, self.message, self.url = status, code, message, url


class Registry:
    """One registry's distribution API, with Basic credentials or its bearer-token challenge."""

    def __init__(self, host, basic):
        self.host = host  # as the reference writes it (docker.io: registry-1.docker.io)
        self.basic = basic
        self.bearer = None
        self.base = f"{local_aws()}/ecs-ami-local/registry/{host}"

    def public_url(self, path):
        return f"https://{self.host}/v2/{path}"

    def get(self, path, accept=None, method="GET"):
        """(body, headers) of a 200 answer; RegistryError otherwise."""
        for attempt in (1, 2):
            headers = {"User-Agent": "docker/stand-in (ecs-ami local AWS)"}
            if accept:
                headers["Accept"] = accept
            if self.bearer:
                headers["Authorization"] = f"Bearer {self.bearer}"
            elif self.basic:
                headers["Authorization"] = f"Basic {self.basic}"
            request = urllib.request.Request(f"{self.base}/v2/{path}", headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    return answer.read(), answer.headers
            except urllib.error.HTTPError as error:
                body = error.read()
                challenge = error.headers.get("WWW-Authenticate", "")
                if error.code == 401 and attempt == 1 and challenge.startswith("Bearer ") and not self.bearer:
                    self.bearer = self.token(challenge)
                    continue
                code, message = "", ""
                try:
                    first = (json.loads(body).get("errors") or [{}])[0]
                    code, message = first.get("code", ""), first.get("message", "")
                except (ValueError, AttributeError):
                    message = body.decode("utf-8", "replace").strip()
                if error.code == 401 and challenge.startswith("Basic ") and not self.basic:
                    code, message = "", "no basic auth credentials"
                raise RegistryError(error.code, code, message, self.public_url(path)) from None
            except urllib.error.URLError as error:
                raise Failure(f'Error response from daemon: Get "{self.public_url(path)}": {error.reason}') from None
        raise AssertionError("unreachable")

    def token(self, challenge):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {k: fields[k] for k in ("service", "scope") if k in fields}
        url = fields.get("realm", "") + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Authorization": f"Basic {self.basic}"} if self.basic else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as answer:
                granted = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            raise RegistryError(error.code, "UNAUTHORIZED", f"the token endpoint answered {error.code}",
                                fields.get("realm", url)) from None
        except (urllib.error.URLError, ValueError) as error:
            raise Failure(f'Error response from daemon: Get "{fields.get("realm", url)}": {error}') from None
        return granted.get("token") or granted.get("access_token")


def daemon_error(error, reference):
    """A registry's refusal as docker words it."""
    detail = f"{error.code.lower().replace('_', ' ')}: {error.message}" if error.code else error.message
    if error.status == 401:
        return f'Error response from daemon: Head "{error.url}": {detail or "unauthorized"}'
    if error.status == 403 or error.code in ("DENIED", "NAME_UNKNOWN"):
        return (f"Error response from daemon: pull access denied for {reference.familiar_name}, repository does "
                f"not exist or may require 'docker login': {detail}")
    if error.code == "MANIFEST_UNKNOWN":
        return f"Error response from daemon: manifest for {reference.familiar} not found: {detail}"
    if error.status >= 500:
        return (f"Error response from daemon: received unexpected HTTP status: {error.status} "
                f"{http.client.responses.get(error.status, '')}")
    return f"Error response from daemon: {detail} ({error.status} from {error.url})"


# --- the image store -----------------------------------------------------------------------------

def blob_path(digest):
    return os.path.join(STORE, "blobs", "sha256", digest.split(":", 1)[1])


def load_images():
    try:
        with open(os.path.join(STORE, "images.json")) as handle:
            return json.load(handle)["images"]
    except FileNotFoundError:
        return []


def save_images(images):
    os.makedirs(STORE, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=STORE, prefix="images.json")
    with os.fdopen(handle, "w") as out:
        json.dump({"images": images}, out, indent=2)
    os.replace(temporary, os.path.join(STORE, "images.json"))


def keep_blob(digest, data):
    path = blob_path(digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".partial", "wb") as out:
        out.write(data)
    os.replace(path + ".partial", path)


def untag(images, tag):
    for image in images:
        if tag in image["RepoTags"]:
            image["RepoTags"].remove(tag)


def find_image(images, text):
    """An image by reference (NAME[:TAG], NAME@DIGEST) or by id (full, or a prefix of its hex)."""
    try:
        reference = Reference(text)
    except Failure:
        reference = None
    if reference is not None:
        for image in images:
            if reference.digest:
                if any(Reference(d).familiar == reference.familiar for d in image["RepoDigests"]):
                    return image
            elif reference.familiar in image["RepoTags"]:
                return image
    prefix = text[len("sha256:"):] if text.startswith("sha256:") else text
    if re.fullmatch(r"[a-f0-9]{1,64}", prefix):
        found = [i for i in images if i["Id"].split(":", 1)[1].startswith(prefix)]
        if len(found) == 1:
            return found[0]
    return None


# --- the commands ------------------------------------------------------------------------------

def login(args, config_dir):
    user = password = server = None
    from_stdin = False
    while args:
        arg = args.pop(0)
        if arg in ("-u", "--username"):
            user = args.pop(0) if args else None
        elif arg.startswith("--username="):
            user = arg.split("=", 1)[1]
        elif arg in ("-p", "--password"):
            password = args.pop(0) if args else None
        elif arg.startswith("--password="):
            password = arg.split("=", 1)[1]
        elif arg == "--password-stdin":
            from_stdin = True
        elif arg.startswith("-"):
            raise Failure(f"unknown flag: {arg}")
        elif server is None:
            server = arg
        else:
            raise Failure('"docker login" requires at most 1 argument.')
    if from_stdin and password is not None:
        raise Failure("--password and --password-stdin are mutually exclusive")
    if from_stdin:
        if not user:
            raise Failure("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\n").rstrip("\r")
    if not user or password is None:
        raise Failure("Error: Cannot perform an interactive login from a non TTY device")
    server = server or HUB_SERVER
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    host = server_host(server)
    registry = Registry("registry-1.docker.io" if host == HUB else host, auth)
    try:
        registry.get("")
    except RegistryError as error:
        if error.status == 401:
            raise Failure(f"Error response from daemon: login attempt to https://{registry.host}/v2/ failed with "
                          "status: 401 Unauthorized") from None
        raise Failure(f'Error response from daemon: Get "https://{registry.host}/v2/": {error.message}') from None
    path = config_path(config_dir)
    config = read_config(path)
    config.setdefault("auths", {})[server] = {"auth": auth}
    write_config(path, config)
    sys.stderr.write(f"WARNING! Your password will be stored unencrypted in {path}.\n"
                     "Configure a credential helper to remove this warning. See\n"
                     "https://docs.docker.com/engine/reference/commandline/login/#credentials-store\n\n")
    print("Login Succeeded")


def logout(args, config_dir):
    if len(args) > 1:
        raise Failure('"docker logout" requires at most 1 argument.')
    server = args[0] if args else HUB_SERVER
    path = config_path(config_dir)
    config = read_config(path)
    auths = config.get("auths") or {}
    present = [key for key in auths if key == server or server_host(key) == server_host(server)]
    if not present:
        print(f"Not logged in to {server}")
        return
    print(f"Removing login credentials for {server}")
    for key in present:
        del auths[key]
    config["auths"] = auths
    write_config(path, config)


def platform_entry(index, reference):
    """The entry of an image index for linux and the instance's architecture
    (`$ECS_AMI_ARCHITECTURE`: x86_64 is amd64), as docker picks it for the machine it runs on:
    amd64 without a variant (or v1), arm64 as v8 or without one."""
    wanted = {"x86_64": "amd64", "arm64": "arm64"}.get(os.environ.get("ECS_AMI_ARCHITECTURE", "x86_64"), "amd64")
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") or {}
        variant = platform.get("variant", "")
        if (platform.get("os") == "linux" and platform.get("architecture") == wanted
                and variant in (("", "v1") if wanted == "amd64" else ("", "v8"))
                and DIGEST.fullmatch(entry.get("digest", ""))):
            return entry
    raise Failure(f"Error response from daemon: no matching manifest for linux/{wanted} in the manifest list "
                  f"entries of {reference.familiar}")


def pull(args, config_dir):
    quiet = False
    positional = []
    while args:
        arg = args.pop(0)
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg == "--platform":
            raise Failure("--platform is not supported by the docker stand-in: pull the platform manifest's digest")
        elif arg.startswith("-"):
            raise Failure(f"unknown flag: {arg}")
        else:
            positional.append(arg)
    if len(positional) != 1:
        raise Failure('"docker pull" requires exactly 1 argument.')
    reference = Reference(positional[0])
    say = (lambda line: None) if quiet else print
    config = read_config(config_path(config_dir))
    registry = Registry(reference.registry_host, basic_auth_for(config, reference.host))
    asked = reference.digest or reference.tag
    accept = ", ".join(IMAGE_TYPES + INDEX_TYPES)
    try:
        data, headers = registry.get(f"{reference.path}/manifests/{asked}", accept=accept)
    except RegistryError as error:
        raise Failure(daemon_error(error, reference)) from None
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if reference.digest and digest != reference.digest:
        raise Failure(f"Error response from daemon: manifest verification failed for digest {reference.digest}: "
                      f"the registry's manifest has the digest {digest}")
    announced = headers.get("Docker-Content-Digest")
    if announced and announced != digest:
        raise Failure(f"Error response from daemon: manifest digest mismatch: the registry says {announced}, "
                      f"the manifest is {digest}")
    media_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip()
    if media_type in INDEX_TYPES:
        # As docker does: the manifest the index lists for this machine's platform, checked
        # against the digest the index gives it; the image is known by the index's digest.
        child = platform_entry(json.loads(data), reference)
        try:
            data, headers = registry.get(f"{reference.path}/manifests/{child['digest']}", accept=accept)
        except RegistryError as error:
            raise Failure(daemon_error(error, reference)) from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != child["digest"]:
            raise Failure(f"Error response from daemon: manifest verification failed for digest {child['digest']}")
        media_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip()
    if media_type not in IMAGE_TYPES:
        raise Failure(f"Error response from daemon: unsupported manifest media type {media_type!r} for {reference.familiar}")
    manifest = json.loads(data)
    config_descriptor = manifest.get("config") or {}
    layers = manifest.get("layers") or []
    say(f"{asked}: Pulling from {reference.path}")
    images = load_images()
    image_id = config_descriptor.get("digest", "")
    current = next((i for i in images if i["Id"] == image_id), None)
    up_to_date = current is not None and all(os.path.exists(blob_path(d["digest"])) for d in layers)
    if not up_to_date:
        for layer in layers:
            say(f"{layer['digest'].split(':', 1)[1][:12]}: Pulling fs layer")
        for descriptor in layers + [config_descriptor]:
            blob_digest = descriptor.get("digest", "")
            if not DIGEST.fullmatch(blob_digest):
                raise Failure(f"Error response from daemon: invalid blob digest {blob_digest!r} in {reference.familiar}")
            try:
                blob, _ = registry.get(f"{reference.path}/blobs/{blob_digest}")
            except RegistryError as error:
                raise Failure(daemon_error(error, reference)) from None
            actual = "sha256:" + hashlib.sha256(blob).hexdigest()
            if actual != blob_digest:
                raise Failure(f"Error response from daemon: failed to pull {reference.familiar}: blob {blob_digest} "
                              f"has the digest {actual}: digest mismatch")
            if len(blob) != descriptor.get("size"):
                raise Failure(f"Error response from daemon: failed to pull {reference.familiar}: blob {blob_digest} is "
                              f"{len(blob)} bytes, its descriptor says {descriptor.get('size')}")
            keep_blob(blob_digest, blob)
            if descriptor is not config_descriptor:
                short = blob_digest.split(":", 1)[1][:12]
                say(f"{short}: Verifying Checksum")
                say(f"{short}: Download complete")
        for layer in layers:
            say(f"{layer['digest'].split(':', 1)[1][:12]}: Pull complete")
    keep_blob(digest, data)
    with open(blob_path(image_id), "rb") as handle:
        image_config = json.load(handle)
    repo_digest = f"{reference.familiar_name}@{digest}"
    if current is None:
        current = {"Id": image_id, "RepoTags": [], "RepoDigests": [], "Manifests": {},
                   "Created": image_config.get("created", ""),
                   "Architecture": image_config.get("architecture", ""), "Os": image_config.get("os", ""),
                   "Variant": image_config.get("variant", ""),
                   "Size": sum(int(layer.get("size", 0)) for layer in layers)}
        images.append(current)
    if repo_digest not in current["RepoDigests"]:
        current["RepoDigests"].append(repo_digest)
    current["Manifests"][repo_digest] = digest
    if reference.tag and not reference.digest:
        tag = f"{reference.familiar_name}:{reference.tag}"
        if tag not in current["RepoTags"]:
            untag(images, tag)
            current["RepoTags"].append(tag)
    save_images(images)
    say(f"Digest: {digest}")
    shown = reference.familiar
    say(f"Status: Image is up to date for {shown}" if up_to_date else f"Status: Downloaded newer image for {shown}")
    print(reference.canonical)


def tag(args):
    if len(args) != 2:
        raise Failure('"docker tag" requires exactly 2 arguments.')
    images = load_images()
    image = find_image(images, args[0])
    if image is None:
        raise Failure(f"Error response from daemon: No such image: {args[0]}")
    target = Reference(args[1])
    if target.digest:
        raise Failure("Error response from daemon: refusing to create a tag with a digest reference")
    name = f"{target.familiar_name}:{target.tag}"
    if name not in image["RepoTags"]:
        untag(images, name)
        image["RepoTags"].append(name)
    save_images(images)


def inspect_document(image):
    with open(blob_path(image["Id"]), "rb") as handle:
        config = json.load(handle)
    document = {
        "Id": image["Id"], "RepoTags": list(image["RepoTags"]), "RepoDigests": list(image["RepoDigests"]),
        "Parent": "", "Comment": "", "Created": image["Created"], "DockerVersion": "", "Author": "",
        "Config": config.get("config") or {}, "Architecture": image["Architecture"],
    }
    if image.get("Variant"):
        document["Variant"] = image["Variant"]
    document.update({
        "Os": image["Os"], "Size": image["Size"],
        "GraphDriver": {"Data": None, "Name": "stand-in"},
        "RootFS": {"Type": "layers", "Layers": (config.get("rootfs") or {}).get("diff_ids", [])},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })
    return document


def go_value(value):
    """A value as Go's text/template prints it."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def lookup(document, path):
    value = document
    for part in path.strip(".").split("."):
        if part:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def render(template, document):
    """The few Go template forms the stand-in knows: {{.Field.Sub}}, {{json .Field}},
    {{index .Field N}} and {{join .Field "SEP"}}."""
    def action(match):
        text = match.group(1).strip()
        simple = re.fullmatch(r"(\.[A-Za-z0-9_.]*)", text)
        if simple:
            return go_value(lookup(document, simple.group(1)))
        as_json = re.fullmatch(r"json\s+(\.[A-Za-z0-9_.]*)", text)
        if as_json:
            return json.dumps(lookup(document, as_json.group(1)))
        index = re.fullmatch(r"index\s+(\.[A-Za-z0-9_.]*)\s+(\d+)", text)
        if index:
            items = lookup(document, index.group(1)) or []
            if int(index.group(2)) >= len(items):
                raise Failure(f"template: :1:2: executing \"\" at <{text}>: error calling index: index out of range")
            return go_value(items[int(index.group(2))])
        join = re.fullmatch(r'join\s+(\.[A-Za-z0-9_.]*)\s+"([^"]*)"', text)
        if join:
            return join.group(2).join(go_value(v) for v in lookup(document, join.group(1)) or [])
        raise Failure(f"the docker stand-in does not support the template action {{{{{text}}}}}")
    return re.sub(r"\{\{(.*?)\}\}", action, template)


def inspect(args):
    template = None
    names = []
    while args:
        arg = args.pop(0)
        if arg in ("-f", "--format"):
            template = args.pop(0) if args else ""
        elif arg.startswith("--format="):
            template = arg.split("=", 1)[1]
        elif arg == "--type":
            if (args.pop(0) if args else "") != "image":
                raise Failure("the docker stand-in inspects images only")
        elif arg.startswith("-"):
            raise Failure(f"unknown flag: {arg}")
        else:
            names.append(arg)
    if not names:
        raise Failure('"docker image inspect" requires at least 1 argument.')
    images = load_images()
    found, missing = [], []
    for name in names:
        image = find_image(images, name)
        if image is None:
            missing.append(name)
        else:
            found.append(inspect_document(image))
    if template is not None:
        for document in found:
            print(render(template, document))
    else:
        print(json.dumps(found, indent=4))
    if missing:
        raise Failure("\n".join(f"Error: No such image: {name}" for name in missing))


def human_size(size):
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}TB"


def human_age(created):
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return "N/A"
    seconds = (datetime.now(timezone.utc) - then).total_seconds()
    minutes, hours = seconds / 60, seconds / 3600
    if seconds < 1:
        text = "Less than a second"
    elif seconds < 60:
        text = f"{int(seconds)} second{'s' if int(seconds) != 1 else ''}"
    elif round(minutes) == 1:
        text = "About a minute"
    elif minutes < 60:
        text = f"{int(minutes)} minutes"
    elif round(hours) == 1:
        text = "About an hour"
    elif hours < 48:
        text = f"{int(hours)} hours"
    elif hours < 24 * 7 * 2:
        text = f"{int(hours / 24)} days"
    elif hours < 24 * 30 * 2:
        text = f"{int(hours / 24 / 7)} weeks"
    elif hours < 24 * 365 * 2:
        text = f"{int(hours / 24 / 30)} months"
    else:
        text = f"{int(hours / 24 / 365)} years"
    return text + " ago"


def list_images(args):
    digests = quiet = False
    wanted = None
    while args:
        arg = args.pop(0)
        if arg == "--digests":
            digests = True
        elif arg in ("-q", "--quiet"):
            quiet = True
        elif arg.startswith("-"):
            raise Failure(f"unknown flag: {arg}")
        elif wanted is None:
            wanted = arg
        else:
            raise Failure('"docker images" requires at most 1 argument.')
    rows = []
    for image in load_images():
        short = image["Id"].split(":", 1)[1][:12]
        entries = [tag.rsplit(":", 1) for tag in image["RepoTags"]] or [
            [d.split("@", 1)[0], "<none>"] for d in image["RepoDigests"][:1]] or [["<none>", "<none>"]]
        for repository, tag_name in entries:
            if wanted is not None:
                want_repository, _, want_tag = wanted.partition(":")
                if repository != want_repository or (want_tag and tag_name != want_tag):
                    continue
            digest = image["Manifests"].get(next((d for d in image["RepoDigests"]
                                                  if d.split("@", 1)[0] == repository), ""), "<none>")
            row = [repository, tag_name] + ([digest] if digests else []) + [
                short, human_age(image["Created"]), human_size(image["Size"])]
            rows.append(row)
    if quiet:
        for short in dict.fromkeys(row[3 if digests else 2] for row in rows):
            print(short)
        return
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def main(argv):
    args = list(argv[1:])
    config_dir = None
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "--config" and args:
            config_dir = args.pop(0)
        elif option.startswith("--config="):
            config_dir = option.split("=", 1)[1]
        else:
            raise Failure(f"the docker stand-in does not implement the option {option}")
    if not args:
        raise Failure("the docker stand-in implements: login, logout, pull, tag, inspect, image inspect, "
                      "images, image ls")
    command, rest = args[0], args[1:]
    if command == "image" and rest:
        command, rest = {"inspect": "inspect", "ls": "images", "list": "images", "pull": "pull",
                         "tag": "tag"}.get(rest[0], "image " + rest[0]), rest[1:]
    if command == "login":
        login(rest, config_dir)
    elif command == "logout":
        logout(rest, config_dir)
    elif command == "pull":
        pull(rest, config_dir)
    elif command == "tag":
        tag(rest)
    elif command == "inspect":
        inspect(rest)
    elif command == "images":
        list_images(rest)
    else:
        raise Failure(f"docker {command}: not implemented by the local AWS's docker stand-in "
                      "(emulator/docker_stand_in.py)")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Failure as failure:
        sys.stderr.write(f"{failure}\n")
        sys.exit(1)
