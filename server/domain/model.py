"""The domain's vocabulary: the things the product rules talk about, as plain immutable values.

Nothing here does I/O or knows about gRPC or the database. Money is an int of fen; every time is
an aware UTC datetime.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime, timedelta


class ReasonCode(enum.StrEnum):
    """Why something was refused; the product's reason codes (README.md, "Rules"), verbatim."""

    COMPLETION_WINDOW_EXCEEDED = "COMPLETION_WINDOW_EXCEEDED"
    ORDER_NOT_COMPLETED = "ORDER_NOT_COMPLETED"
    WITHIN_AFTER_SALES_PERIOD = "WITHIN_AFTER_SALES_PERIOD"
    INSUFFICIENT_GUARANTEE = "INSUFFICIENT_GUARANTEE"
    SHOP_NOT_OPERATING = "SHOP_NOT_OPERATING"
    ORDER_KIND_NOT_SUPPORTED = "ORDER_KIND_NOT_SUPPORTED"
    NOTHING_REFUNDABLE = "NOTHING_REFUNDABLE"
    ENTRY_ALREADY_OPEN = "ENTRY_ALREADY_OPEN"
    OPERATOR_NOT_ALLOWED = "OPERATOR_NOT_ALLOWED"
    MARKETING_CAMPAIGN_NOT_ALLOWED = "MARKETING_CAMPAIGN_NOT_ALLOWED"
    ENTRY_NOT_OPEN = "ENTRY_NOT_OPEN"
    AMOUNT_EXCEEDS_REFUNDABLE = "AMOUNT_EXCEEDS_REFUNDABLE"
    BUYER_NOT_ORDER_OWNER = "BUYER_NOT_ORDER_OWNER"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    DEBTS_BEING_RECOVERED = "DEBTS_BEING_RECOVERED"
    ORDER_FACTS_FROZEN = "ORDER_FACTS_FROZEN"
    AMOUNT_EXCEEDS_APPLICATION = "AMOUNT_EXCEEDS_APPLICATION"
    CATEGORY_NOT_DESIGNATED = "CATEGORY_NOT_DESIGNATED"
    ORDER_BEFORE_WALLET_OPENED = "ORDER_BEFORE_WALLET_OPENED"
    REFUND_OUTSIDE_CLAWBACK_WINDOW = "REFUND_OUTSIDE_CLAWBACK_WINDOW"
    NOT_A_LATE_REFUND = "NOT_A_LATE_REFUND"
    APPLICATION_NOT_OF_ORDER = "APPLICATION_NOT_OF_ORDER"
    REFUND_ID_REUSED = "REFUND_ID_REUSED"
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    REQUEST_ID_EXPIRED = "REQUEST_ID_EXPIRED"
    CALLER_NOT_AUTHENTICATED = "CALLER_NOT_AUTHENTICATED"
    CALLER_NOT_ALLOWED = "CALLER_NOT_ALLOWED"
    PERSON_NOT_AUTHENTICATED = "PERSON_NOT_AUTHENTICATED"
    NOT_THE_AUTHENTICATED_PERSON = "NOT_THE_AUTHENTICATED_PERSON"


class ShopStatus(enum.StrEnum):
    NORMAL = "NORMAL"
    SUSPENDED = "SUSPENDED"  # 停业整顿
    CLOSED = "CLOSED"  # 关店


class StaffRole(enum.StrEnum):
    OWNER = "OWNER"  # 主账号, the main account
    ADMIN = "ADMIN"  # 管理员
    CS_ADMIN = "CS_ADMIN"  # 客服管理员
    CS_AGENT = "CS_AGENT"
    FINANCE = "FINANCE"
    OPERATIONS = "OPERATIONS"


class OrderKind(enum.StrEnum):
    ORDINARY = "ORDINARY"  # 小店普通订单
    CROSS_BORDER = "CROSS_BORDER"  # 跨境订单
    PRESALE = "PRESALE"  # 定金类型订单: a presale paid by a down payment (not the 保证金 deposit)


class PayeeKind(enum.StrEnum):
    INFLUENCER = "INFLUENCER"  # 达人
    GROUP_LEADER = "GROUP_LEADER"  # 团长
    AFFILIATE = "AFFILIATE"  # 快赚客
    TECHNICAL_SERVICE_FEE = "TECHNICAL_SERVICE_FEE"  # TR, 技术服务费


class AccountKind(enum.StrEnum):
    ANXIN_WALLET = "ANXIN_WALLET"  # 安心钱包, a shop's
    DEPOSIT = "DEPOSIT"  # 保证金, a shop's security deposit
    CASH = "CASH"  # 现金户, a payee's
    PLATFORM_COMMISSION = "PLATFORM_COMMISSION"  # 抽佣账户, the platform's one
    EXTERNAL = "EXTERNAL"  # money outside the system; one

    @property
    def has_owner(self) -> bool:
        """Whether accounts of this kind belong to someone (a shop, a payee) or are unique."""
        return self not in (AccountKind.PLATFORM_COMMISSION, AccountKind.EXTERNAL)


class TransferKind(enum.StrEnum):
    FUNDS_IN = "FUNDS_IN"
    FUNDS_OUT = "FUNDS_OUT"
    REFUND_PAYMENT = "REFUND_PAYMENT"
    CLAWBACK = "CLAWBACK"
    DEBT_RECOVERY = "DEBT_RECOVERY"


class EntryState(enum.StrEnum):
    OPEN = "OPEN"
    USED = "USED"
    EXPIRED = "EXPIRED"


class ApplicationState(enum.StrEnum):
    FILED = "FILED"
    REFUNDED = "REFUNDED"


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who made a change: the identity of the calling service (its certificate's) and the person
    it acted for ("staff:<id>" or "buyer:<id>", from the person's token). Empty where nobody was
    authenticated (a development server without --tls-client-ca)."""

    service: str = ""
    person: str = ""


NOBODY = Actor()


@dataclasses.dataclass(frozen=True)
class Policy:
    """The numbers and switches of the rules, loaded from a policy file (domain/policy.py)."""

    version: str
    completion_window: timedelta = timedelta(days=120)
    entry_window: timedelta = timedelta(hours=72)
    opener_roles: frozenset[StaffRole] = frozenset(
        {StaffRole.OWNER, StaffRole.ADMIN, StaffRole.CS_ADMIN}
    )
    order_kinds: frozenset[OrderKind] = frozenset({OrderKind.ORDINARY, OrderKind.CROSS_BORDER})
    marketing_campaign_orders_allowed: bool = True
    clawback_window: timedelta = timedelta(days=120)
    # The designated categories (指定类目) whose late refunds get their commissions recovered.
    designated_categories: frozenset[str] = frozenset()
    # How long events are kept for their consumers before they are pruned.
    event_retention: timedelta = timedelta(days=7)
    # How long a mutation's request id is remembered, with its response, for its retries.
    request_retention: timedelta = timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class Shop:
    shop_id: str
    name: str
    status: ShopStatus
    wallet_opened_at: datetime | None
    # The upstream's version of the record; 0 when it sends none (see Store.put_shop).
    version: int = 0
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY


@dataclasses.dataclass(frozen=True)
class Staff:
    staff_id: str
    shop_id: str
    role: StaffRole
    name: str
    version: int = 0
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY


@dataclasses.dataclass(frozen=True)
class CommissionLine:
    payee_kind: PayeeKind
    payee_id: str
    amount: int


@dataclasses.dataclass(frozen=True)
class Order:
    order_id: str
    shop_id: str
    buyer_id: str
    kind: OrderKind
    marketing_campaign: bool
    category_id: str
    paid_amount: int
    created_at: datetime
    completed_at: datetime | None
    after_sales_ends_at: datetime | None
    prior_refunded_amount: int = 0
    # Refunds recorded through this service (late refunds), on top of the prior ones.
    recorded_refunded_amount: int = 0
    commission_lines: tuple[CommissionLine, ...] = ()
    version: int = 0
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY

    @property
    def refunded_amount(self) -> int:
        return self.prior_refunded_amount + self.recorded_refunded_amount

    @property
    def refundable_amount(self) -> int:
        """The maximum refundable amount (订单最大可退金额): paid minus already refunded."""
        return max(self.paid_amount - self.refunded_amount, 0)


@dataclasses.dataclass(frozen=True)
class Entry:
    entry_id: str
    order_id: str
    shop_id: str
    state: EntryState
    opened_at: datetime
    expires_at: datetime
    operator_id: str
    note: str
    policy_version: str
    used_at: datetime | None = None
    application_id: str | None = None
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY

    @property
    def closed_at(self) -> datetime | None:
        if self.state is EntryState.USED:
            return self.used_at
        if self.state is EntryState.EXPIRED:
            return self.expires_at
        return None


@dataclasses.dataclass(frozen=True)
class Application:
    application_id: str
    order_id: str
    entry_id: str
    buyer_id: str
    amount: int
    reason: str
    state: ApplicationState
    filed_at: datetime
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY


@dataclasses.dataclass(frozen=True)
class AccountRef:
    kind: AccountKind
    owner_id: str = ""


PLATFORM_COMMISSION = AccountRef(AccountKind.PLATFORM_COMMISSION)
EXTERNAL = AccountRef(AccountKind.EXTERNAL)


@dataclasses.dataclass(frozen=True)
class Transfer:
    transfer_id: str
    from_account: AccountRef
    to_account: AccountRef
    amount: int
    kind: TransferKind
    reference: str
    posted_at: datetime
    memo: str = ""
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY


@dataclasses.dataclass(frozen=True)
class Movement:
    """Money to move from one account to another: a transfer before it is posted."""

    from_account: AccountRef
    to_account: AccountRef
    amount: int
    kind: TransferKind
    reference: str
    # Unique among all transfers: the same movement can never be posted twice.
    idempotency_key: str
    memo: str = ""


@dataclasses.dataclass(frozen=True)
class Violation:
    """One unmet rule: its reason code and what is wrong, with the figures involved."""

    code: ReasonCode
    description: str


@dataclasses.dataclass(frozen=True)
class EligibilityFacts:
    """Everything the entry rules decide on, read in one go."""

    now: datetime
    order: Order
    shop: Shop
    operator: Staff
    wallet_balance: int
    deposit_balance: int
    # The order's entry stored as OPEN, if any; it may have expired by time already.
    stored_open_entry: Entry | None


@dataclasses.dataclass(frozen=True)
class EligibilityDecision:
    violations: tuple[Violation, ...]
    days_since_completion: int
    already_open: Entry | None

    @property
    def eligible(self) -> bool:
        return not self.violations

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(v.code for v in self.violations)


class ClawbackState(enum.StrEnum):
    RECOVERED = "RECOVERED"  # every line recovered in full
    PARTIAL = "PARTIAL"  # some recovered, some still owed
    OUTSTANDING = "OUTSTANDING"  # something is due and nothing was recovered yet
    NOT_ELIGIBLE = "NOT_ELIGIBLE"  # the refund's commissions are not recovered; see reasons

    @classmethod
    def of(cls, due: int, recovered: int) -> ClawbackState:
        """The state of an eligible clawback that has recovered `recovered` of `due`."""
        if recovered >= due:
            return cls.RECOVERED
        return cls.PARTIAL if recovered > 0 else cls.OUTSTANDING


class LineState(enum.StrEnum):
    RECOVERED = "RECOVERED"
    PARTIAL = "PARTIAL"
    OUTSTANDING = "OUTSTANDING"


@dataclasses.dataclass(frozen=True)
class Refund:
    """A refund paid to the buyer, as the after-sales system reports it."""

    refund_id: str
    order_id: str
    application_id: str  # empty when it did not come through a re-opened entry
    amount: int
    started_at: datetime
    paid_at: datetime


@dataclasses.dataclass(frozen=True)
class AppliedThrough:
    """The application a refund names, with what the rules need of it."""

    application: Application
    entry_opened_at: datetime  # when the entry the buyer filed through was opened
    refunded: int  # refunded through this application before


@dataclasses.dataclass(frozen=True)
class RefundPayment:
    """Where the money paid to the buyer came from: the wallet first, the rest from the deposit."""

    from_wallet: int
    from_deposit: int


@dataclasses.dataclass(frozen=True)
class ClawbackLine:
    line_no: int
    payee_kind: PayeeKind
    payee_id: str
    commission: int
    due: int
    recovered: int = 0

    @property
    def outstanding(self) -> int:
        return self.due - self.recovered

    @property
    def state(self) -> LineState:
        if self.recovered >= self.due:
            return LineState.RECOVERED
        return LineState.PARTIAL if self.recovered > 0 else LineState.OUTSTANDING

    @property
    def account(self) -> AccountRef:
        """Where the line is recovered from: the payee's cash account, or for the technical
        service fee the platform's commission account."""
        if self.payee_kind is PayeeKind.TECHNICAL_SERVICE_FEE:
            return PLATFORM_COMMISSION
        return AccountRef(AccountKind.CASH, self.payee_id)


@dataclasses.dataclass(frozen=True)
class Debt:
    """An outstanding clawback line of a payee, owed to the shop whose wallet it is credited to."""

    clawback_id: str
    line_no: int
    shop_id: str
    due: int
    recovered: int
    payee_kind: PayeeKind
    # The debt's place among all debts, oldest first: debts are paid in this order.
    seq: int = 0
    # The order whose refund the clawback is of.
    order_id: str = ""

    @property
    def outstanding(self) -> int:
        return self.due - self.recovered


@dataclasses.dataclass(frozen=True)
class RefundClawback:
    """What a refund recovers (TR/佣金退回): one line per commission line of the order."""

    clawback_id: str
    refund: Refund
    shop_id: str
    reasons: tuple[Violation, ...]
    lines: tuple[ClawbackLine, ...]
    refunded_before: int
    refunded_after: int
    policy_version: str
    created_at: datetime
    payment: RefundPayment = RefundPayment(0, 0)
    # Who recorded it: the calling service and the person it acted for (audit).
    recorded_by: Actor = NOBODY

    @property
    def eligible(self) -> bool:
        return not self.reasons

    @property
    def due(self) -> int:
        return sum(line.due for line in self.lines)

    @property
    def recovered(self) -> int:
        return sum(line.recovered for line in self.lines)

    @property
    def outstanding(self) -> int:
        return self.due - self.recovered

    @property
    def state(self) -> ClawbackState:
        if not self.eligible:
            return ClawbackState.NOT_ELIGIBLE
        return ClawbackState.of(self.due, self.recovered)
