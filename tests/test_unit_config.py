"""Unit tests for middleware.config: loading and checking the twistd INI file."""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware.config import BatchingConfig, Config, ConfigError, load_config
from middleware.outbox import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
TWISTD_CONF = ROOT / "twistd.conf"
MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"


@pytest.fixture(scope="module")
def config() -> Config:
    """The repository's own twistd.conf, loaded."""
    return load_config(TWISTD_CONF)


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of twistd.conf in tmp_path with one piece of text replaced."""
    text = TWISTD_CONF.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "twistd.conf"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_repository_config_has_the_five_institutions(config: Config) -> None:
    """twistd.conf describes the three wards, a welfare office and a pension-office
    institution with their codes, names and kinds."""
    assert [(i.name, i.code, i.display_name, i.kind) for i in config.institutions] == [
        ("meguro", MEGURO, "目黒区", "municipality"),
        ("setagaya", SETAGAYA, "世田谷区", "municipality"),
        ("shibuya", "1131130000000000", "渋谷区", "municipality"),
        ("welfare", "2131105000000001", "目黒区福祉事務所", "welfare_office"),
        ("pension", "3000000000000001", "年金事務機関", "pension"),
    ]


def test_institutions_carry_their_services_and_provided_information(config: Config) -> None:
    """Each node has its listeners, back-office systems and provided information."""
    meguro = config.institution("meguro")
    setagaya = config.institution("setagaya")
    assert meguro.provides == ("TM00000000000004",)
    assert setagaya.provides == ("TM00000000000002", "TM00000000000004")
    assert meguro.back_office_systems == ("care-insurance",)
    assert setagaya.back_office_systems == ("local-tax", "care-insurance")
    assert meguro.replica_inbox == ROOT / "var" / "meguro" / "replica-inbox"
    assert meguro.network_listen == "tcp:port=7411:interface=127.0.0.1"
    assert meguro.network_address == "https://127.0.0.1:7411"
    assert meguro.back_office_address == "https://127.0.0.1:7412"


def test_relative_sqlite_urls_are_resolved_against_the_file(config: Config) -> None:
    """A relative sqlite:/// database path is made absolute relative to the config file."""
    assert config.institution("meguro").database == f"sqlite:///{ROOT / 'var' / 'meguro.sqlite'}"
    assert config.network is not None
    assert config.network.database == f"sqlite:///{ROOT / 'var' / 'hub.sqlite'}"


def test_network_section_is_read(config: Config) -> None:
    """The [network] section gives the hub's listener, address, rules file and validities."""
    network = config.network
    assert network is not None
    assert network.listen == "tcp:port=7400:interface=127.0.0.1"
    assert network.address == "https://127.0.0.1:7400"
    assert network.permitted_list == ROOT / "simulators" / "network" / "data" / "permitted_list.csv"
    assert network.permitted_list.is_file()
    assert network.list_validity == 86400.0
    assert network.permit_validity == 600.0
    assert config.hub_address == "https://127.0.0.1:7400"
    assert config.pki == ROOT / "var" / "pki"


def test_delivery_section_gives_the_retry_policy(config: Config) -> None:
    """The [delivery] section gives retry backoff, lease and polling intervals."""
    assert config.retry == RetryPolicy(initial=0.5, maximum=60.0, lease=30.0)
    assert config.poll_interval == 1.0
    assert config.list_refresh == 300.0
    assert config.retention_interval == 60.0
    assert config.demo_data == ROOT / "simulators" / "data" / "demo.json"


def test_delivery_section_gives_the_link_batching(config: Config) -> None:
    """The [delivery] link_batch_* keys say how the links batch messages."""
    assert config.batching == BatchingConfig(size=32, max_bytes=1_048_576, linger=0.0, in_flight=0)
    assert config.batching.enabled


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("link_batch_size = 32", "link_batch_size = 65", "link_batch_size"),
        ("link_batch_size = 32", "link_batch_size = 0", "link_batch_size"),
        ("link_batch_bytes = 1048576", "link_batch_bytes = 2097153", "link_batch_bytes"),
        ("link_batch_linger = 0", "link_batch_linger = -1", "link_batch_linger"),
        ("link_batch_in_flight = 0", "link_batch_in_flight = -1", "link_batch_in_flight"),
    ],
)
def test_a_link_batching_beyond_what_receivers_take_is_a_config_error(
    tmp_path: Path, old: str, new: str, named: str
) -> None:
    """A batch size above what a receiver takes (64), a byte cap above half its body limit
    or a negative linger is refused, naming the key."""
    assert f"[delivery] {named}" in _load_error(_variant(tmp_path, old, new))


def test_institution_is_found_by_name_or_code(config: Config) -> None:
    """config.institution accepts the section name or the institution code."""
    assert config.institution(SETAGAYA) is config.institution("setagaya")


def test_unknown_institution_lookup_is_a_config_error(config: Config) -> None:
    """Asking for an institution not in the file raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="nerima"):
        config.institution("nerima")


def test_network_section_is_optional(tmp_path: Path) -> None:
    """Without [network] the file runs nodes only and network is None."""
    text = TWISTD_CONF.read_text(encoding="utf-8")
    start = text.index("[network]")
    end = text.index("[institution:meguro]")
    path = tmp_path / "nodes.conf"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    config = load_config(path)
    assert config.network is None
    assert len(config.institutions) == 5


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that does not exist raises ConfigError naming the path."""
    path = tmp_path / "absent.conf"
    message = _load_error(path)
    assert "cannot read" in message
    assert str(path) in message


def test_missing_key_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """An institution section without its code raises ConfigError naming the missing key."""
    path = _variant(tmp_path, f"code = {SETAGAYA}\n", "")
    message = _load_error(path)
    assert str(path) in message
    assert "'code'" in message


def test_missing_renkei_section_is_a_config_error(tmp_path: Path) -> None:
    """A file without the [renkei] section raises ConfigError naming it."""
    path = _variant(tmp_path, "[renkei]", "[something-else]")
    assert "renkei" in _load_error(path)


def test_non_numeric_setting_is_a_config_error(tmp_path: Path) -> None:
    """A retry delay that is not a number raises ConfigError quoting the bad value."""
    path = _variant(tmp_path, "retry_initial = 0.5", "retry_initial = soon")
    assert "soon" in _load_error(path)


def test_duplicate_section_is_a_config_error(tmp_path: Path) -> None:
    """Two sections of the same name are reported as a ConfigError naming the section."""
    path = _variant(tmp_path, "[institution:setagaya]", "[institution:meguro]")
    assert "institution:meguro" in _load_error(path)


def test_two_institutions_with_one_code_is_a_config_error(tmp_path: Path) -> None:
    """Two institutions sharing an institution code raise ConfigError saying so."""
    path = _variant(tmp_path, f"code = {SETAGAYA}", f"code = {MEGURO}")
    assert "share an institution code" in _load_error(path)


def test_bad_institution_code_is_a_config_error(tmp_path: Path) -> None:
    """An institution code that is not 16 digits raises ConfigError quoting it."""
    path = _variant(tmp_path, f"code = {SETAGAYA}", "code = 11311")
    assert "11311" in _load_error(path)


def test_bad_provided_information_name_is_a_config_error(tmp_path: Path) -> None:
    """A malformed information name code in 'provides' raises ConfigError quoting it."""
    path = _variant(tmp_path, "provides = TM00000000000002", "provides = TM2")
    assert "TM2" in _load_error(path)


def test_population_section_gives_size_and_seed(config: Config) -> None:
    """[population] gives the generated population's size and seed."""
    assert config.population is not None
    assert (config.population.size, config.population.seed) == ("small", 20261126)


def test_unknown_population_size_is_a_config_error(tmp_path: Path) -> None:
    """A population size other than small or full is refused naming the value."""
    message = _load_error(_variant(tmp_path, "size = small", "size = huge"))
    assert "'huge'" in message


def test_unknown_institution_kind_is_a_config_error(tmp_path: Path) -> None:
    """An institution kind the permitted-query list cannot name is refused on load."""
    message = _load_error(_variant(tmp_path, "kind = pension", "kind = pension-office"))
    assert "pension-office" in message


def test_jobs_section_gives_the_backoff_and_the_runs_kept(config: Config) -> None:
    """[jobs] gives every party's backoff after a failed run and how many runs are kept."""
    from middleware.config import JobsConfig

    assert config.jobs == JobsConfig(retry_initial=1.0, retry_maximum=60.0, keep_runs=100)


def test_a_jobs_backoff_that_shrinks_is_a_config_error(tmp_path: Path) -> None:
    """A retry_maximum below retry_initial is refused, naming the section."""
    path = _variant(tmp_path, "retry_maximum = 60\nkeep_runs", "retry_maximum = 0.5\nkeep_runs")
    assert "[jobs] retry_maximum" in _load_error(path)


def test_health_section_gives_what_the_health_looks_at(config: Config) -> None:
    """[health] gives the interval, the outbox thresholds and (left out) no fixed list
    warning; without [alerts] nothing is posted."""
    from middleware.config import HealthConfig

    assert config.health == HealthConfig(
        interval=5.0, outbox_backlog=1000, outbox_wait=60.0, list_warning=None
    )
    assert config.alerts is None


def test_alerts_section_gives_the_webhook_and_its_retries(tmp_path: Path) -> None:
    """[alerts] gives the webhook, the receiver's name and the retries of a notification."""
    from middleware.config import AlertsConfig

    path = _variant(
        tmp_path,
        "[demo]\n",
        "[alerts]\nwebhook = https://alerts.example.jp/hook\nattempts = 3\n\n[demo]\n",
    )
    assert load_config(path).alerts == AlertsConfig(
        webhook="https://alerts.example.jp/hook", attempts=3
    )


def test_an_alert_webhook_that_is_not_a_url_is_a_config_error(tmp_path: Path) -> None:
    """A webhook that is not an http(s) URL is refused, naming it."""
    path = _variant(tmp_path, "[demo]\n", "[alerts]\nwebhook = alerts.example.jp\n\n[demo]\n")
    assert "[alerts] webhook 'alerts.example.jp'" in _load_error(path)


def test_retention_section_gives_each_kind_its_period(config: Config) -> None:
    """[retention] gives the purge's interval and batch and each kind's period: 7 calendar
    years for the records and the audit log, days for the rest; without [backup] no
    scheduled backup."""
    from middleware.config import RetentionConfig
    from middleware.period import Period

    assert config.retention == RetentionConfig(
        interval=3600.0,
        batch=1000,
        provision_records=Period(years=7),
        audit_log=Period(years=7),
        held_contents=Period(seconds=30 * 86400.0),
        outbox_bodies=Period(seconds=30 * 86400.0),
        replica_file_answers=Period(seconds=30 * 86400.0),
        query_results=Period(seconds=7 * 86400.0),
    )
    assert config.backup is None


def test_a_retention_key_that_is_no_kind_or_no_period_is_a_config_error(tmp_path: Path) -> None:
    """A [retention] key that names no kind of data, or a period that is not one, is refused
    naming it; so is the institutions' former result_retention."""
    path = _variant(tmp_path, "audit_log = 7y", "audit_logs = 7y")
    assert "[retention] audit_logs is not a kind of data kept" in _load_error(path)
    path = _variant(tmp_path, "audit_log = 7y", "audit_log = 7 years")
    assert "[retention] audit_log: '7 years' is not a period" in _load_error(path)
    path = _variant(tmp_path, "audit_log = 7y", "audit_log = 0d")
    assert "a period must be above 0" in _load_error(path)
    path = _variant(tmp_path, "provides = TM00000000900002\n", "provides = TM00000000900002\n"
                    "result_retention = 604800\n")  # fmt: skip
    assert "[institution:pension] result_retention" in _load_error(path)
    assert "[retention] query_results" in _load_error(path)


def test_backup_section_gives_the_directory_the_interval_and_the_backups_kept(
    tmp_path: Path,
) -> None:
    """[backup] with a directory (relative to the file) turns the scheduled backups on."""
    from middleware.config import BackupConfig

    path = _variant(tmp_path, "[demo]\n", "[backup]\ndirectory = var/backups\nkeep = 3\n\n[demo]\n")
    assert load_config(path).backup == BackupConfig(
        directory=tmp_path / "var" / "backups", interval=86400.0, keep=3
    )
