"""The ``knd`` command line: each process loads only its own command."""

from __future__ import annotations

import pytest

from services.cli import SERVICES, build_parser
from tests.helpers.fresh import python


def test_a_service_process_does_not_import_the_others():
    code = ("import sys; from services.cli import build_parser; "
            "build_parser('discovery').parse_args(['discovery']); "
            "print('pyroute2' in sys.modules, 'grpc' in sys.modules, "
            "'kubernetes_asyncio' in sys.modules)")
    out = python(code).split()
    assert out == ["False", "False", "False"]


@pytest.mark.parametrize("command", ["up", *SERVICES])
def test_one_command_parser_parses_as_the_full_one(command):
    assert vars(build_parser(command).parse_args([command])) == vars(
        build_parser().parse_args([command]))


def test_listing_the_commands_loads_none_of_them():
    """`knd --help` is typed by people: it must not pay for what the commands import."""
    code = ("import sys, contextlib, io; from services import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.main(['--help'])\n"
            "print(sorted(m for m in ('nats', 'pyroute2', 'grpc', 'kubernetes_asyncio', 'cel',"
            " 'aiohttp', 'prometheus_client') if m in sys.modules))")
    out = python(code)
    assert out == "[]"


def test_discovery_and_the_plumber_load_no_aiohttp():
    """nats-py would import it for WebSockets the bus never uses; providers use http.client."""
    code = ("import sys; import services.discovery.service, services.plumber.service, "
            "services.providers.choose, services.common.bus, nats.aio.transport as t; "
            "print('aiohttp' in sys.modules, t.aiohttp is None)")
    out = python(code).split()
    assert out == ["False", "True"]


SERVICE_IMPORTS = {
    "discovery": "services.discovery.service, services.providers.choose",
    "plumber": "services.plumber.service, services.providers.choose",
    "publisher": "services.publisher.service",
    "kubelet-gateway": "services.kubelet_gateway.service, services.kubelet_gateway.grpc_server",
}


@pytest.mark.parametrize("service", sorted(SERVICE_IMPORTS))
def test_services_load_the_libraries_lean(service):
    """services.common.lean: the parts of nats-py, pyroute2 and prometheus-client that no
    service uses stay out of every service process."""
    code = ("import sys; import services.common.wiring, services.common.httpserver, "
            f"{SERVICE_IMPORTS[service]}; "
            "print(sorted(m for m in ('nats.js.client', 'nats.js.kv', 'importlib.metadata', "
            "'pyroute2.ndb.main', 'pyroute2.ipdb', 'pyroute2.netlink.nl80211', "
            "'prometheus_client.exposition', 'wsgiref') if m in sys.modules))")
    out = python(code)
    assert out == "[]"


def test_lean_packages_still_give_their_whole_api_to_whoever_asks():
    """A package loaded lean runs its __init__ when one of its own names is asked for;
    nats-py still tells the server its real version."""
    code = ("import sys, services; import prometheus_client.metrics, pyroute2.iproute.linux; "
            "import nats.aio.client as c; from importlib.metadata import version; "
            "lean = 'prometheus_client.exposition' not in sys.modules; "
            "from prometheus_client import generate_latest, REGISTRY; "
            "from pyroute2 import IPRoute, NDB; import nats.js; "
            "print(lean, callable(generate_latest), IPRoute.__name__, "
            "nats.js.JetStreamContext.__name__, c.__version__ == version('nats-py'))")
    out = python(code).split()
    assert out == ["True", "True", "IPRoute", "JetStreamContext", "True"]
