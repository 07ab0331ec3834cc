"""Shared fixtures. The testbed (real PostgreSQL 15 and 17, real SSH) comes up once
per session."""

from __future__ import annotations

import os

import pytest

from fabfile import facts
from testbed import compose as tb
from testbed.bed import CLUSTER, Bed

SIZE_MB = int(os.environ.get("TESTBED_SIZE_MB", "20"))


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return " ".join(tb.compose_command())


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(tb.DOCKER / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return tb.current().project


@pytest.fixture(scope="session")
def docker_setup():
    # Images first (base images by debootstrap when no registry answers), then a fresh
    # testbed. pytest-docker runs compose with our environment: give it the same state
    # dir and ports.
    os.environ.update(tb.current().env())
    tb.keys()
    tb.base_images()
    tb.compose("build")
    return ["down -v --remove-orphans", "up -d"]


@pytest.fixture(scope="session")
def docker_cleanup():
    return ["down -v --remove-orphans"]


@pytest.fixture(scope="session")
def testbed(docker_services):
    """The seeded testbed; yields the path of its ssh config."""
    docker_services.wait_until_responsive(check=tb.healthy, timeout=180, pause=1)
    tb.seed(SIZE_MB)
    yield str(tb.current().ssh_config)


@pytest.fixture(scope="session")
def bed(testbed, tmp_path_factory) -> Bed:
    b = Bed(testbed, tmp_path_factory.mktemp("slony-migrate-home"))
    yield b
    b.hosts.__exit__()


@pytest.fixture
def migrated(bed):
    """A testbed on which `inv migrate` has run: kept from an earlier test when still
    replicating."""
    if not facts.slony_state(bed["db01"], CLUSTER).subscribed:
        # whatever an earlier test left (e.g. uninstalled, data kept on db02)
        bed.reset()
        bed.inv("migrate", "--master", "db01", "--slave", "db02")
    return bed
