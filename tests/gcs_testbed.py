"""A local Cloud Storage for the tests: `gcp-storage-emulator` plus a TLS-terminating proxy.

Run as a process (`python tests/gcs_testbed.py DIR`): it starts the emulator (in memory) and the
proxy on 127.0.0.1, writes `DIR/testbed.json` ({"emulator": url, "proxy": url, "ca": pem path})
and serves until killed. `client_env(info)` gives the variables that point every client at it:

* TensorStore (orbax's arrays): `TENSORSTORE_GCS_HTTP_URL` = the emulator URL, and
  `GOOGLE_AUTH_TOKEN_FOR_TESTING` (a fixed bearer token, so no credentials are looked up).
* TensorFlow's GCS file system (`tf.io.gfile`, hence etils.epath, orbax's metadata files,
  TensorBoard event files, seqio caches and tf.data readers): it has no endpoint variable (the
  JSON API and download hosts `www.googleapis.com` / `storage.googleapis.com` are compiled in),
  but its libcurl honours `HTTPS_PROXY` and `CURL_CA_BUNDLE`. So the proxy answers `CONNECT`,
  terminates TLS with a certificate for those hosts signed by a throw-away CA (the bundle), and
  forwards the plain requests to the emulator. Resumable-upload `Location`s are rewritten back to
  the Google host, so the uploads come through the proxy too: TF sends them chunked, and the
  emulator stores a chunked body verbatim, so the proxy de-chunks. `GOOGLE_AUTH_TOKEN_FOR_TESTING`
  skips TF's credential lookup too, and `NO_GCE_CHECK=true` its metadata-server probe.
* google-cloud-storage (not used by the project; for completeness): `STORAGE_EMULATOR_HOST`.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import http.server
import json
import pathlib
import socketserver
import ssl
import sys
import threading

GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
TOKEN = "emulator-token"  # any value: neither the emulator nor the clients check it


def client_env(info: dict) -> dict[str, str]:
    """Environment variables that point TensorStore, TensorFlow and google-cloud-storage at the
    testbed described by `info` (the contents of testbed.json)."""
    return {
        "TENSORSTORE_GCS_HTTP_URL": info["emulator"],
        "TENSORSTORE_GCS_REQUEST_CONCURRENCY": "8",  # the emulator serves one at a time
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": TOKEN,
        "NO_GCE_CHECK": "true",
        "HTTPS_PROXY": info["proxy"],
        "https_proxy": info["proxy"],
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "CURL_CA_BUNDLE": info["ca"],
        "STORAGE_EMULATOR_HOST": info["emulator"],
        # TF caches stat/listing results; a resumed run must see the files the killed one wrote.
        "GCS_STAT_CACHE_MAX_AGE": "0",
        "GCS_MATCHING_PATHS_CACHE_MAX_AGE": "0",
        "GCS_READ_CACHE_MAX_SIZE_MB": "0",
    }


def _write_certificates(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A CA and a leaf certificate for GOOGLE_HOSTS signed by it; returns (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=7))

    def build(subject, issuer, public_key, signing_key, *, ca: bool, sans=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("testbed CA", "testbed CA", ca_key.public_key(), ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(
        GOOGLE_HOSTS[0], "testbed CA", leaf_key.public_key(), ca_key, ca=False, sans=GOOGLE_HOSTS
    )
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def _forwarding_handler(emulator: tuple[str, int]):
    class Forward(http.server.BaseHTTPRequestHandler):
        """Serves the decrypted requests of one tunnel by replaying them on the emulator."""

        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self):
            body = self._body()
            if not self.headers.get("Authorization", "").removeprefix("Bearer").strip():
                # As GCS answers for a private bucket: the no-credentials case is testable.
                self.send_response(401, "Unauthorized")
                data = b'{"error": {"code": 401, "message": "Anonymous caller"}}'
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            skip = {"host", "connection", "transfer-encoding", "content-length", "expect"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            headers["Host"] = f"{emulator[0]}:{emulator[1]}"
            conn = http.client.HTTPConnection(*emulator, timeout=60)
            conn.request(self.command, self.path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            conn.close()
            self.send_response(reply.status, reply.reason)
            for k, v in reply.getheaders():
                if k.lower() == "location":  # keep resumable uploads on the proxy (see above)
                    v = v.replace(headers["Host"], GOOGLE_HOSTS[0], 1).replace("http:", "https:", 1)
                if k.lower() not in {"connection", "transfer-encoding", "content-length"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        def log_message(self, *args):
            pass

    return Forward


def _proxy_handler(context: ssl.SSLContext, forward):
    class Connect(http.server.BaseHTTPRequestHandler):
        """Answers CONNECT for the Google hosts and serves the tunnel with `forward`."""

        def do_CONNECT(self):
            host = self.path.rsplit(":", 1)[0]
            if host not in GOOGLE_HOSTS:
                self.send_error(403, f"testbed proxies only {GOOGLE_HOSTS}")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.close_connection = True
            try:
                tls = context.wrap_socket(self.connection, server_side=True)
            except (ssl.SSLError, OSError):
                return
            forward(tls, self.client_address, self.server)

        def log_message(self, *args):
            pass

    return Connect


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class _DeepBacklogServer(http.server.HTTPServer):
    request_queue_size = 1024


def _accept_empty_media_uploads(server_module) -> None:
    """The emulator reads an empty body as "no data" and fails `uploadType=media` uploads of
    empty objects, which is how TF's `makedirs` creates its `dir/` placeholder objects."""
    read = server_module._read_data

    def read_data(handler, query):
        data = read(handler, query)
        return b"" if data is None and query.get("uploadType") == ["media"] else data

    server_module._read_data = read_data


def _report_generations(server_module) -> None:
    """Media downloads carry `x-goog-generation`, as real GCS's do: TensorStore takes the
    generation from that header and sends it back as `ifGenerationMatch` on the next write
    (OCDBT manifests); without it the write fails with "Malformed StorageGeneration"."""
    objects = server_module.objects
    download = objects.download

    def with_generation(request, response, storage, *args, **kwargs):
        with contextlib.suppress(Exception):  # a missing object is download's 404 to give
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
        return download(request, response, storage, *args, **kwargs)

    objects.download = with_generation  # `objects.get` (alt=media) looks it up here
    for _, handlers in server_module.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is download:
                handlers[method] = with_generation


def serve(directory: pathlib.Path) -> None:
    """Starts the emulator and the proxy, writes testbed.json into `directory`, and serves."""
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.server import create_server

    _accept_empty_media_uploads(emulator_server)
    _report_generations(emulator_server)
    # The emulator serves one request at a time from a listen backlog of 5; orbax's TensorStore
    # opens dozens of connections at once, and refused ones fail the checkpoint write.
    emulator_server.server.HTTPServer = _DeepBacklogServer

    emulator = create_server("127.0.0.1", 0, in_memory=True)
    emulator.start()
    emulator_address = emulator._api._httpd.server_address[:2]  # port 0: ask the bound socket
    ca, cert, key = _write_certificates(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    proxy = _ThreadingServer(
        ("127.0.0.1", 0), _proxy_handler(context, _forwarding_handler(emulator_address))
    )
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    info = {
        "emulator": "http://{}:{}".format(*emulator_address),
        "proxy": "http://{}:{}".format(*proxy.server_address[:2]),
        "ca": str(ca),
    }
    tmp = directory / "testbed.json.tmp"
    tmp.write_text(json.dumps(info))
    tmp.rename(directory / "testbed.json")
    threading.Event().wait()


if __name__ == "__main__":
    serve(pathlib.Path(sys.argv[1]))


# ---------------------------------------------------------------------------------------------
# A client independent of the project (plain JSON API over HTTP), for setting up and checking
# ---------------------------------------------------------------------------------------------
def _call(info: dict, method: str, url: str, body: bytes | None = None, ctype: str = ""):
    import urllib.request

    headers = {"Content-Type": ctype} if ctype else {}
    request = urllib.request.Request(info["emulator"] + url, body, headers, method=method)
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.read()


def create_bucket(info: dict, name: str) -> None:
    """Creates bucket `name` on the emulator."""
    body = json.dumps({"name": name}).encode()
    _call(info, "POST", "/storage/v1/b?project=test", body, "application/json")


def upload(info: dict, bucket: str, name: str, data: bytes) -> None:
    """Writes object `name` of `bucket`."""
    from urllib.parse import quote

    url = f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name, safe='')}"
    _call(info, "POST", url, data, "application/octet-stream")


def upload_tree(info: dict, local: pathlib.Path, bucket: str, prefix: str) -> None:
    """Uploads the files under `local` to `bucket` as `prefix/<relative path>`."""
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        upload(info, bucket, f"{prefix}/{file.relative_to(local).as_posix()}", file.read_bytes())


def list_objects(info: dict, bucket: str, prefix: str = "") -> list[str]:
    """Names of the objects of `bucket` under `prefix`."""
    from urllib.parse import quote

    names, token = [], ""
    while True:
        url = f"/storage/v1/b/{bucket}/o?prefix={quote(prefix, safe='')}&pageToken={token}"
        page = json.loads(_call(info, "GET", url))
        names += [item["name"] for item in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            return names


def download(info: dict, bucket: str, name: str) -> bytes:
    """The contents of object `name` of `bucket`."""
    from urllib.parse import quote

    return _call(info, "GET", f"/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media")
