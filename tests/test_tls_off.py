"""services.common.lean.without_tls: a service that speaks no TLS starts without OpenSSL."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from services import cli
from tests.helpers.fresh import python

OFF = "from services.common import lean; assert lean.without_tls('test says so')\n"


def openssl_mapped() -> str:
    return "sum('libcrypto' in l or 'libssl' in l for l in open('/proc/self/maps'))"


@pytest.mark.parametrize(("argv", "off"), [
    (["discovery"], True),
    (["plumber"], True),
    (["publisher", "--standalone"], True),
    (["kubelet-gateway", "--standalone"], True),
    (["publisher"], False),  # the API server, over https
    (["kubelet-gateway", "--kubeconfig", "/k"], False),
    (["discovery", "--webhook-url", "https://hooks:8443"], False),
    (["plumber", "--metadata-url", "https://169.254.169.254"], False),
    (["plumber", "--webhook-url", "http://hooks:8080"], True),
])
def test_which_services_need_tls(argv, off):
    args = cli.build_parser(argv[0]).parse_args(argv)
    why = cli.tls_unused(args)
    assert (why is not None) == off, why
    if off:
        assert f"knd {argv[0]}" in why


def test_a_service_without_tls_loads_no_openssl_and_its_digests_still_agree():
    code = (OFF + "import hashlib, hmac, secrets, asyncio, nats.aio.client, anyio, "
            "urllib.request, http.client\n"
            "import services.discovery.service, services.plumber.service\n"
            f"print({openssl_mapped()}, hashlib.sha256(b'knd').hexdigest(), "
            "hmac.new(b'k', b'knd', 'sha256').hexdigest(), len(secrets.token_hex(8)))")
    mapped, digest, mac, token = python(code).split()
    assert mapped == "0"
    assert digest == hashlib.sha256(b"knd").hexdigest()  # this process: OpenSSL's
    assert mac == hmac.new(b"k", b"knd", "sha256").hexdigest()
    assert token == "16"


def test_asking_for_tls_without_it_says_why():
    code = (OFF + "import asyncio, ssl, socket\n"
            "from services.common.lean import TlsOff\n"
            "srv = socket.create_server(('127.0.0.1', 0))\n"
            "async def main():\n"
            "    try:\n"
            "        await asyncio.open_connection('127.0.0.1', srv.getsockname()[1], ssl=True)\n"
            "    except TlsOff as exc:\n"
            "        return str(exc)\n"
            "print(asyncio.run(main()))\n"
            "for make in (lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),\n"
            "             lambda: ssl.TLSVersion.TLSv1_2):\n"
            "    try:\n"
            "        make()\n"
            "    except TlsOff as exc:\n"
            "        print(exc)\n")
    lines = python(code).splitlines()
    assert lines == ["TLS is off in this process: test says so",
                     "TLS is off in this process: test says so",
                     "ssl.TLSVersion: TLS is off in this process: test says so"]


def test_modules_that_name_tls_at_import_still_load_without_it():
    """prometheus-client's text format module names ssl's types in its signatures."""
    code = (OFF + "from prometheus_client import exposition, Counter, REGISTRY\n"
            "Counter('knd_probe', 'x').inc()\n"
            "print(b'knd_probe_total 1.0' in exposition.generate_latest(REGISTRY))")
    assert python(code) == "True"


def test_the_stand_ins_errors_are_classes_that_stay_the_same():
    """``except ssl.SSLWantReadError`` (asyncio, anyio) needs one exception class."""
    code = (OFF + "import ssl\n"
            "print(ssl.SSLWantReadError is ssl.SSLWantReadError, "
            "issubclass(ssl.SSLCertVerificationError, ssl.SSLError), "
            "issubclass(ssl.SSLError, OSError))")
    assert python(code).split() == ["True", "True", "True"]


def test_without_tls_changes_nothing_once_openssl_is_loaded():
    code = ("import ssl, sys; from services.common import lean\n"
            "print(lean.without_tls('late'), sys.modules['ssl'] is ssl, "
            "ssl.create_default_context().__class__.__name__)")
    assert python(code).split() == ["False", "True", "SSLContext"]
