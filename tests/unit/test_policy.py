"""The policy file: the shipped defaults of the rules, overrides, selection, and refused files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server import settings
from server.domain import policy as policy_loader
from server.domain.model import OrderKind, StaffRole
from server.domain.policy import PolicyError

DEFAULT_ROLES = {StaffRole.OWNER, StaffRole.ADMIN, StaffRole.CS_ADMIN}
DEFAULT_KINDS = {OrderKind.ORDINARY, OrderKind.CROSS_BORDER}


@pytest.fixture(autouse=True)
def no_policy_in_the_environment(monkeypatch):
    monkeypatch.delenv(settings.POLICY_ENV, raising=False)


def write_policy(tmp_path, text: str, name: str = "policy.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- The shipped policy --------------------------------------------------------------------------


def test_the_shipped_policy_has_the_product_defaults():
    policy = settings.load_policy()

    assert policy.completion_window == timedelta(days=120)
    assert policy.entry_window == timedelta(hours=72)
    assert policy.opener_roles == DEFAULT_ROLES
    assert policy.order_kinds == DEFAULT_KINDS
    assert policy.marketing_campaign_orders_allowed is True
    assert policy.event_retention == timedelta(days=7)
    assert policy.request_retention == timedelta(days=7)
    assert isinstance(policy.version, str) and policy.version


def test_loading_the_shipped_file_by_path_gives_the_same_policy():
    assert settings.load_policy(settings.POLICY_PATH) == settings.load_policy()


# --- A policy file of one's own -------------------------------------------------------------------


def test_a_two_second_window_gives_a_two_second_window(tmp_path):
    path = write_policy(tmp_path, 'version = "fast"\n[entry]\nwindow_seconds = 2\n')

    policy = settings.load_policy(path)

    assert policy.version == "fast"
    assert policy.entry_window == timedelta(seconds=2)


def test_settings_left_out_of_a_policy_file_keep_their_defaults(tmp_path):
    path = write_policy(tmp_path, 'version = "fast"\n[entry]\nwindow_seconds = 2\n')

    policy = settings.load_policy(path)

    assert policy.completion_window == timedelta(days=120)
    assert policy.opener_roles == DEFAULT_ROLES
    assert policy.order_kinds == DEFAULT_KINDS
    assert policy.marketing_campaign_orders_allowed is True


def test_a_policy_file_with_only_a_version_is_the_default_policy(tmp_path):
    path = write_policy(tmp_path, 'version = "bare"\n')

    policy = settings.load_policy(path)

    assert policy.entry_window == timedelta(hours=72)
    assert policy.completion_window == timedelta(days=120)


def test_a_policy_without_designated_categories_is_said_to_recover_no_commission(tmp_path):
    bare = settings.load_policy(write_policy(tmp_path, 'version = "bare"\n'))

    assert bare.designated_categories == frozenset()
    assert policy_loader.warnings(bare) == [
        "the policy designates no category ([clawback] designated_categories): "
        "no late refund recovers commissions"
    ]
    assert policy_loader.warnings(settings.load_policy()) == []  # the shipped one designates some


def test_every_setting_can_be_overridden(tmp_path):
    path = write_policy(
        tmp_path,
        'version = "custom-7"\n'
        "[entry]\n"
        "completion_window_seconds = 86400\n"
        "window_seconds = 3600\n"
        'opener_roles = ["OWNER"]\n'
        'order_kinds = ["ORDINARY", "CROSS_BORDER", "PRESALE"]\n'
        "marketing_campaign_orders_allowed = false\n"
        "[requests]\n"
        "retention_seconds = 86400\n",
    )

    policy = settings.load_policy(path)

    assert policy.version == "custom-7"
    assert policy.completion_window == timedelta(days=1)
    assert policy.entry_window == timedelta(hours=1)
    assert policy.opener_roles == {StaffRole.OWNER}
    assert policy.order_kinds == set(OrderKind)
    assert policy.marketing_campaign_orders_allowed is False
    assert policy.request_retention == timedelta(days=1)


# --- Choosing the policy --------------------------------------------------------------------------


def test_the_environment_variable_chooses_the_policy_file(tmp_path, monkeypatch):
    path = write_policy(tmp_path, 'version = "from-env"\n[entry]\nwindow_seconds = 2\n')
    monkeypatch.setenv("AFTERSALES_POLICY", str(path))

    policy = settings.load_policy()

    assert policy.version == "from-env"
    assert policy.entry_window == timedelta(seconds=2)


def test_an_explicit_path_wins_over_the_environment_variable(tmp_path, monkeypatch):
    from_env = write_policy(tmp_path, 'version = "from-env"\n', name="env.toml")
    explicit = write_policy(tmp_path, 'version = "explicit"\n', name="explicit.toml")
    monkeypatch.setenv("AFTERSALES_POLICY", str(from_env))

    assert settings.load_policy(explicit).version == "explicit"


def test_an_environment_variable_naming_a_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AFTERSALES_POLICY", str(tmp_path / "nowhere.toml"))

    with pytest.raises(PolicyError):
        settings.load_policy()


# --- Refused policy files -------------------------------------------------------------------------


def test_a_missing_policy_file_is_an_error(tmp_path):
    with pytest.raises(PolicyError):
        settings.load_policy(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[entry]\nwindow_seconds = 2\n", id="no-version"),
        pytest.param('version = ""\n', id="empty-version"),
        pytest.param("version = 3\n", id="version-not-a-string"),
        pytest.param('version = "v"\nwindow_seconds = 2\n', id="window-outside-the-entry-table"),
        pytest.param('version = "v"\n[entry]\nwindow_seconds = 0\n', id="zero-window"),
        pytest.param('version = "v"\n[entry]\nwindow_seconds = -1\n', id="negative-window"),
        pytest.param('version = "v"\n[entry]\nwindow_seconds = 2.5\n', id="fractional-window"),
        pytest.param('version = "v"\n[entry]\nwindow_seconds = 2.0\n', id="float-window"),
        pytest.param('version = "v"\n[entry]\nwindow_seconds = "2"\n', id="window-as-text"),
        pytest.param('version = "v"\n[entry]\nwindow_seconds = true\n', id="window-as-boolean"),
        pytest.param(
            'version = "v"\n[entry]\ncompletion_window_seconds = 0\n', id="zero-completion-window"
        ),
        pytest.param(
            'version = "v"\n[entry]\ncompletion_window_seconds = -86400\n',
            id="negative-completion-window",
        ),
        pytest.param(
            'version = "v"\n[entry]\ncompletion_window_seconds = 10368000.0\n',
            id="float-completion-window",
        ),
        pytest.param(
            'version = "v"\n[entry]\nopener_roles = ["OWNER", "BOSS"]\n', id="unknown-role"
        ),
        pytest.param('version = "v"\n[entry]\nopener_roles = ["owner"]\n', id="role-in-lower-case"),
        pytest.param('version = "v"\n[entry]\nopener_roles = "OWNER"\n', id="roles-not-a-list"),
        pytest.param(
            'version = "v"\n[entry]\norder_kinds = ["ORDINARY", "LAYAWAY"]\n', id="unknown-kind"
        ),
        pytest.param('version = "v"\n[events]\nretention_seconds = 0\n', id="zero-retention"),
        pytest.param(
            'version = "v"\n[events]\nretention_seconds = 315360001\n', id="retention-too-long"
        ),
        pytest.param('version = "v"\nevents = 5\n', id="events-not-a-table"),
        pytest.param('version = "v"\nrequests = 5\n', id="requests-not-a-table"),
        pytest.param('version = "v"\nentry = 5\n', id="entry-not-a-table"),
        pytest.param('version = "v"\n[entry\n', id="not-toml"),
    ],
)
def test_a_malformed_policy_file_is_refused(tmp_path, text):
    path = write_policy(tmp_path, text)

    with pytest.raises(PolicyError):
        settings.load_policy(path)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param('version = "v"\ncolour = "blue"\n', "colour", id="unknown-top-level-key"),
        pytest.param(
            'version = "v"\n[entry]\nwindow_hours = 72\n', "window_hours", id="unknown-entry-key"
        ),
        pytest.param('version = "v"\n[refunds]\nlimit = 1\n', "refunds", id="unknown-table"),
        pytest.param(
            'version = "v"\n[events]\nkeep_days = 7\n', "events.keep_days", id="unknown-events-key"
        ),
        pytest.param(
            'version = "v"\n[requests]\nkeep_days = 7\n',
            "requests.keep_days",
            id="unknown-requests-key",
        ),
    ],
)
def test_an_unknown_setting_is_refused_by_name(tmp_path, text, named):
    path = write_policy(tmp_path, text)

    with pytest.raises(PolicyError, match=named):
        settings.load_policy(path)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"false"', id="text-false"),
        pytest.param('"no"', id="text-no"),
        pytest.param("0", id="number-zero"),
    ],
)
def test_the_campaign_switch_must_be_a_boolean(tmp_path, value):
    # A switch written as text must not silently read as "on" (bool("false") is True).
    path = write_policy(
        tmp_path, f'version = "v"\n[entry]\nmarketing_campaign_orders_allowed = {value}\n'
    )

    with pytest.raises(PolicyError):
        settings.load_policy(path)


# --- Values out of range: one line naming the setting and its limit ------------------------------

TEN_YEARS = 315_360_000


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(
            f'version = "{"v" * 65}"\n',
            "`version` must be at most 64 characters, not 65",
            id="version-longer-than-its-column",
        ),
        pytest.param(
            'version = "v1\\nv2"\n',
            "`version` must be printable characters only",
            id="version-with-a-line-break",
        ),
        pytest.param(
            'version = "v\\u0007"\n',
            "`version` must be printable characters only",
            id="version-with-a-control-character",
        ),
        pytest.param(
            f'version = "v"\n[entry]\nwindow_seconds = {TEN_YEARS + 1}\n',
            f"entry.window_seconds must be a whole number of seconds from 1 to {TEN_YEARS} "
            f"(10 years), not {TEN_YEARS + 1}",
            id="entry-window-over-ten-years",
        ),
        pytest.param(
            'version = "v"\n[entry]\nwindow_seconds = 9223372036854775807\n',
            "entry.window_seconds must be a whole number of seconds from 1 to",
            id="entry-window-that-overflows-dates",
        ),
        pytest.param(
            f'version = "v"\n[entry]\ncompletion_window_seconds = {TEN_YEARS + 1}\n',
            "entry.completion_window_seconds must be a whole number of seconds from 1 to",
            id="completion-window-over-ten-years",
        ),
        pytest.param(
            'version = "v"\n[entry]\ncompletion_window_seconds = 0\n',
            "entry.completion_window_seconds must be a whole number of seconds from 1 to",
            id="completion-window-zero",
        ),
        pytest.param(
            'version = "v"\n[clawback]\nwindow_seconds = 99999999999999\n',
            "clawback.window_seconds must be a whole number of seconds from 1 to",
            id="clawback-window-over-ten-years",
        ),
        pytest.param(
            'version = "v"\n[clawback]\nwindow_seconds = -5\n',
            "clawback.window_seconds must be a whole number of seconds from 1 to",
            id="clawback-window-negative",
        ),
        pytest.param(
            'version = "v"\n[requests]\nretention_seconds = 3599\n',
            f"requests.retention_seconds must be a whole number of seconds from 3600 to "
            f"{TEN_YEARS} (10 years), not 3599",
            id="request-retention-under-an-hour",
        ),
        pytest.param(
            f'version = "v"\n[requests]\nretention_seconds = {TEN_YEARS + 1}\n',
            "requests.retention_seconds must be a whole number of seconds from 3600 to",
            id="request-retention-over-ten-years",
        ),
        pytest.param(
            'version = "v"\n[entry]\nopener_roles = []\n',
            "entry.opener_roles must be a non-empty list of names among OWNER, ADMIN",
            id="no-opener-role",
        ),
        pytest.param(
            'version = "v"\n[entry]\nopener_roles = ["OWNER", "BOSS"]\n',
            "entry.opener_roles: 'BOSS' is not one of OWNER, ADMIN, CS_ADMIN",
            id="unknown-role-named",
        ),
        pytest.param(
            'version = "v"\n[entry]\nopener_roles = ["OWNER", ""]\n',
            "entry.opener_roles: '' is not one of",
            id="empty-role-named",
        ),
        pytest.param(
            'version = "v"\n[entry]\norder_kinds = []\n',
            "entry.order_kinds must be a non-empty list of names among ORDINARY, CROSS_BORDER",
            id="no-order-kind",
        ),
        pytest.param(
            'version = "v"\n[entry]\norder_kinds = ["ORDINARY", "LAYAWAY"]\n',
            "entry.order_kinds: 'LAYAWAY' is not one of ORDINARY, CROSS_BORDER, PRESALE",
            id="unknown-kind-named",
        ),
        pytest.param(
            'version = "v"\n[clawback]\ndesignated_categories = ["furniture", ""]\n',
            "clawback.designated_categories must be a list of non-empty, printable names",
            id="empty-category",
        ),
        pytest.param(
            'version = "v"\n[entry]\nmarketing_campaign_orders_allowed = "yes"\n',
            "entry.marketing_campaign_orders_allowed is a switch, true or false, not 'yes'",
            id="switch-as-text",
        ),
    ],
)
def test_a_value_out_of_range_is_refused_in_one_line_naming_the_setting(tmp_path, text, line):
    path = write_policy(tmp_path, text)

    with pytest.raises(PolicyError) as refused:
        settings.load_policy(path)

    message = str(refused.value)
    assert message.startswith(f"{path}: ")
    assert line in message
    assert "\n" not in message


def test_the_limits_themselves_are_accepted(tmp_path):
    path = write_policy(
        tmp_path,
        f'version = "{"v" * 64}"\n'
        f"[entry]\nwindow_seconds = {TEN_YEARS}\ncompletion_window_seconds = 1\n"
        f"[clawback]\nwindow_seconds = {TEN_YEARS}\n"
        "[requests]\nretention_seconds = 3600\n",
    )

    policy = settings.load_policy(path)

    assert len(policy.version) == 64
    assert policy.entry_window == policy.clawback_window == timedelta(days=3650)
    assert policy.completion_window == timedelta(seconds=1)
    assert policy.request_retention == timedelta(hours=1)


def test_a_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_bytes(b'version = "\xff"\n')

    with pytest.raises(PolicyError) as refused:
        settings.load_policy(path)

    assert "\n" not in str(refused.value)
