"""The product's business rules, as pure functions from facts and a policy to a decision.

Read next to the rules tables of README.md: each rule below names its row there. Nothing here
does I/O; every function returns every rule that fails, never just the first. Where SQL must say
a rule again (the expiry filter of listings, the stale-version upsert), the store names the rule
it restates and a test ties the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from server.domain.model import (
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    AppliedThrough,
    ClawbackLine,
    CommissionLine,
    EligibilityDecision,
    EligibilityFacts,
    Entry,
    EntryState,
    Order,
    PayeeKind,
    Policy,
    ReasonCode,
    RefundPayment,
    Shop,
    ShopStatus,
    Staff,
    Violation,
)

DAY_SECONDS = 86_400


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}" if fen >= 0 else f"-{_yuan(-fen)}"


# --- The window ------------------------------------------------------------------------------


def entry_state(entry: Entry, now: datetime) -> EntryState:
    """An open entry whose window has passed has closed by itself, whether or not it is stored so.

    The window is half-open: the buyer may file at opened_at and not at expires_at.
    """
    if entry.state is EntryState.OPEN and now >= entry.expires_at:
        return EntryState.EXPIRED
    return entry.state


def entry_as_seen(entry: Entry, now: datetime) -> Entry:
    state = entry_state(entry, now)
    return entry if state is entry.state else dataclasses.replace(entry, state=state)


def still_open(candidate: Entry | None, now: datetime) -> Entry | None:
    """The entry that is open now, given the entry stored as OPEN (if any)."""
    if candidate is not None and entry_state(candidate, now) is EntryState.OPEN:
        return candidate
    return None


def new_entry(
    entry_id: str, facts: EligibilityFacts, note: str, policy: Policy, by: Actor = NOBODY
) -> Entry:
    """The entry opened now on eligible facts: the buyer may file for `entry_window` (3 days)."""
    return Entry(
        entry_id=entry_id,
        order_id=facts.order.order_id,
        shop_id=facts.order.shop_id,
        state=EntryState.OPEN,
        opened_at=facts.now,
        expires_at=facts.now + policy.entry_window,
        operator_id=facts.operator.staff_id,
        note=note,
        policy_version=policy.version,
        recorded_by=by,
    )


# Two openers raced: the other one's entry was committed between our read and our write.
OPENED_MEANWHILE = Violation(
    ReasonCode.ENTRY_ALREADY_OPEN, "another entry of the order was opened at the same moment"
)


# --- Who may open ----------------------------------------------------------------------------


def operator_belongs_to_shop(operator: Staff, order: Order) -> bool:
    """Any account of another shop is refused before anything about the order is revealed."""
    return operator.shop_id == order.shop_id


def operator_may_open(operator: Staff, policy: Policy) -> bool:
    """Only the main account, an administrator and a customer-service administrator may open."""
    return operator.role in policy.opener_roles


def shows_balances(operator: Staff, policy: Policy) -> bool:
    """The shop's wallet and deposit balances are shown only to those who may open the entry."""
    return operator_may_open(operator, policy)


# --- Opening the entry (打开条件, 同时满足) ----------------------------------------------------


def check_entry(facts: EligibilityFacts, policy: Policy) -> EligibilityDecision:
    """Every unmet condition for opening the entry of facts.order, in the rules table's order."""
    order, shop, now = facts.order, facts.shop, facts.now
    violations: list[Violation] = []

    # 1. The trade completed at most `completion_window` ago (exactly the window is still in).
    days = 0
    if order.completed_at is None:
        violations.append(
            Violation(ReasonCode.ORDER_NOT_COMPLETED, "the order's trade has not completed")
        )
    else:
        since = now - order.completed_at
        days = max(int(since.total_seconds()) // DAY_SECONDS, 0)
        if since > policy.completion_window:
            violations.append(
                Violation(
                    ReasonCode.COMPLETION_WINDOW_EXCEEDED,
                    f"the trade completed more than {_duration(policy.completion_window)} ago "
                    f"({days} whole days); the entry may be opened within "
                    f"{_duration(policy.completion_window)} of completion",
                )
            )
        # The entry is for orders whose regular after-sales period is over.
        if order.after_sales_ends_at is not None and now < order.after_sales_ends_at:
            violations.append(
                Violation(
                    ReasonCode.WITHIN_AFTER_SALES_PERIOD,
                    f"the regular after-sales period runs until "
                    f"{order.after_sales_ends_at.isoformat()}; the buyer can apply normally",
                )
            )

    # 2. The wallet or the deposit, each on its own, covers the maximum refundable amount.
    # (The balances are named only to those who may open: shows_balances.)
    refundable = order.refundable_amount
    if facts.wallet_balance < refundable and facts.deposit_balance < refundable:
        violations.append(
            Violation(
                ReasonCode.INSUFFICIENT_GUARANTEE,
                f"neither the Anxin wallet ({_yuan(facts.wallet_balance)}) nor the deposit "
                f"({_yuan(facts.deposit_balance)}) covers the refundable amount "
                f"({_yuan(refundable)})"
                if shows_balances(facts.operator, policy)
                else "neither the Anxin wallet nor the deposit covers the refundable amount",
            )
        )

    # 3. The shop is in normal operation.
    if shop.status is not ShopStatus.NORMAL:
        violations.append(
            Violation(
                ReasonCode.SHOP_NOT_OPERATING,
                f"the shop is {shop.status.value.lower()}; "
                "only a shop in normal operation may open",
            )
        )

    # 4. Ordinary and cross-border orders only; marketing-campaign orders by policy switch.
    if order.kind not in policy.order_kinds:
        violations.append(
            Violation(
                ReasonCode.ORDER_KIND_NOT_SUPPORTED,
                f"{order.kind.value.lower().replace('_', '/')} orders are not supported",
            )
        )
    if order.marketing_campaign and not policy.marketing_campaign_orders_allowed:
        violations.append(
            Violation(
                ReasonCode.MARKETING_CAMPAIGN_NOT_ALLOWED,
                "marketing-campaign orders may not be opened under the policy in force",
            )
        )

    # 5. Something is left to refund.
    if refundable <= 0:
        violations.append(
            Violation(
                ReasonCode.NOTHING_REFUNDABLE,
                f"paid {_yuan(order.paid_amount)}, refunded {_yuan(order.refunded_amount)}: "
                "nothing is left to refund",
            )
        )

    # One open entry per order at a time.
    already_open = still_open(facts.stored_open_entry, now)
    if already_open is not None:
        violations.append(
            Violation(
                ReasonCode.ENTRY_ALREADY_OPEN,
                f"entry {already_open.entry_id} is open until "
                f"{already_open.expires_at.isoformat()}",
            )
        )

    # Three roles of the shop's own staff.
    if not (
        operator_belongs_to_shop(facts.operator, order)
        and operator_may_open(facts.operator, policy)
    ):
        violations.append(
            Violation(
                ReasonCode.OPERATOR_NOT_ALLOWED,
                "only the shop's main account, an administrator or a customer-service "
                "administrator may open the entry",
            )
        )

    return EligibilityDecision(tuple(violations), days, already_open)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % DAY_SECONDS == 0:
        return f"{seconds // DAY_SECONDS} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds} seconds"


# --- Filing within the window ------------------------------------------------------------------


def buyer_owns_order(order: Order, buyer_id: str) -> bool:
    return order.buyer_id == buyer_id


def check_buyer(order: Order, buyer_id: str) -> tuple[Violation, ...]:
    """Only the order's own buyer may file through its entry."""
    if buyer_owns_order(order, buyer_id):
        return ()
    return (Violation(ReasonCode.BUYER_NOT_ORDER_OWNER, f"{buyer_id} is not the order's buyer"),)


def check_application(
    order: Order, amount: int, stored_open_entry: Entry | None, now: datetime
) -> tuple[Violation, ...]:
    """Every unmet condition for the buyer to file `amount` now (the buyer already checked)."""
    violations: list[Violation] = []
    if still_open(stored_open_entry, now) is None:
        violations.append(
            Violation(
                ReasonCode.ENTRY_NOT_OPEN,
                "no after-sales entry of the order is open; the merchant may open one",
            )
        )
    violations.extend(_within_refundable(order, amount))
    return tuple(violations)


# --- Moving money ------------------------------------------------------------------------------


def check_withdrawal(
    balance: int, amount: int, *, debts_pending: bool = False
) -> tuple[Violation, ...]:
    """Money leaving an account to the outside may not take it below zero, nor leave a payee's
    cash account while the clawback debts it owes are still being paid from it (more debts than
    one posting pays: the sweeper is paying on, and the balance is theirs first)."""
    violations = []
    if amount > balance:
        violations.append(
            Violation(
                ReasonCode.INSUFFICIENT_FUNDS,
                f"{_yuan(amount)} asked, the balance is {_yuan(balance)}",
            )
        )
    if debts_pending:
        violations.append(
            Violation(
                ReasonCode.DEBTS_BEING_RECOVERED,
                "the payee's clawback debts are being paid from this balance; retry after the "
                "server's next sweep",
            )
        )
    return tuple(violations)


def is_stale(stored_version: int, incoming_version: int) -> bool:
    """Upstream facts keep their newest version: a record whose version is below the stored one
    (a late or replayed message) changes nothing. Version 0 is unversioned and always applies."""
    return 0 < incoming_version < stored_version


def version_kept(stored_version: int, incoming_version: int) -> int:
    """The version a put that applies leaves stored: the newest seen. An unversioned put (0)
    keeps the stored version, so that a message older than it stays stale after the put."""
    return max(stored_version, incoming_version)


def commission_line_problems(
    lines: Sequence[CommissionLine], paid_amount: int
) -> list[tuple[str, str]]:
    """What is wrong with an order's commission lines, as (field path, description): the
    technical service fee has no payee (it goes to the platform), every other line names one, and
    all of them together are at most the paid amount."""
    problems = []
    for i, line in enumerate(lines):
        if line.payee_kind is PayeeKind.TECHNICAL_SERVICE_FEE and line.payee_id:
            problems.append(
                (
                    f"commission_lines[{i}].payee_id",
                    "must be empty for the platform's technical service fee",
                )
            )
    total = sum(line.amount for line in lines if line.amount > 0)
    if paid_amount > 0 and total > paid_amount:
        problems.append(
            (
                "commission_lines",
                f"the commissions add up to {total}, more than the paid amount {paid_amount}",
            )
        )
    return problems


def order_facts_frozen(stored: Order, new: Order) -> tuple[Violation, ...]:
    """Once money moved on an order, what the money was computed from stays as it was."""
    if stored.recorded_refunded_amount == 0:
        return ()
    changed = [
        name
        for name, before, after in (
            ("shop_id", stored.shop_id, new.shop_id),
            ("paid_amount", stored.paid_amount, new.paid_amount),
            ("prior_refunded_amount", stored.prior_refunded_amount, new.prior_refunded_amount),
            ("commission_lines", stored.commission_lines, new.commission_lines),
        )
        if before != after
    ]
    if not changed:
        return ()
    return (
        Violation(
            ReasonCode.ORDER_FACTS_FROZEN,
            f"refunds were recorded on the order; {', '.join(changed)} can no longer change",
        ),
    )


# --- Commission clawback (TR/佣金退回) -----------------------------------------------------------


def check_refund(
    order: Order, amount: int, via: AppliedThrough | None = None
) -> tuple[Violation, ...]:
    """A refund may not take more than what is left to refund, nor, when it names the buyer's
    application, more than the application asked for (refunds through it so far included)."""
    violations = list(_within_refundable(order, amount))
    if via is not None:
        application = via.application
        if application.order_id != order.order_id:
            violations.append(
                Violation(
                    ReasonCode.APPLICATION_NOT_OF_ORDER,
                    f"application {application.application_id} belongs to order "
                    f"{application.order_id}",
                )
            )
        elif via.refunded + amount > application.amount:
            violations.append(
                Violation(
                    ReasonCode.AMOUNT_EXCEEDS_APPLICATION,
                    f"a refund of {_yuan(amount)} through an application of "
                    f"{_yuan(application.amount)} of which {_yuan(via.refunded)} was refunded",
                )
            )
    return tuple(violations)


def _within_refundable(order: Order, amount: int) -> tuple[Violation, ...]:
    if amount > order.refundable_amount:
        return (
            Violation(
                ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE,
                f"{_yuan(amount)} asked, at most {_yuan(order.refundable_amount)} is refundable",
            ),
        )
    return ()


def may_go_below_zero(account: AccountRef) -> bool:
    """Whether paying out of `account` (a refund, a clawback) may take it below zero: the
    external account, the platform's commission account and a merchant's deposit (a debt of the
    merchant once a refund was paid from it) may; no other account may. Withdrawals to the
    outside never overdraw (check_withdrawal)."""
    return account.kind in (
        AccountKind.EXTERNAL,
        AccountKind.PLATFORM_COMMISSION,
        AccountKind.DEPOSIT,
    )


def split_refund_payment(amount: int, wallet_balance: int) -> RefundPayment:
    """The buyer is paid from the Anxin wallet first; what it lacks comes from the deposit, which
    may go below zero (a debt of the merchant): the buyer, once refunded, is never refused."""
    from_wallet = min(amount, max(wallet_balance, 0))
    return RefundPayment(from_wallet=from_wallet, from_deposit=amount - from_wallet)


def check_clawback(
    order: Order, shop: Shop, started_at: datetime, entry_opened_at: datetime | None, policy: Policy
) -> tuple[Violation, ...]:
    """Every reason the commissions of a refund started at `started_at` are not recovered; empty
    when they are. `entry_opened_at`: when the re-opened entry the refund came through was opened
    (None when it did not come through one)."""
    violations: list[Violation] = []

    # 1. The order's product is in a designated category (指定类目).
    if order.category_id not in policy.designated_categories:
        violations.append(
            Violation(
                ReasonCode.CATEGORY_NOT_DESIGNATED,
                f"category {order.category_id or '(none)'} is not a designated category",
            )
        )

    # 2. The order was created at or after the moment the merchant opened its Anxin wallet.
    if shop.wallet_opened_at is None:
        violations.append(
            Violation(ReasonCode.ORDER_BEFORE_WALLET_OPENED, "the shop has no Anxin wallet")
        )
    elif order.created_at < shop.wallet_opened_at:
        violations.append(
            Violation(
                ReasonCode.ORDER_BEFORE_WALLET_OPENED,
                f"the order was created at {order.created_at.isoformat()}, before the Anxin "
                f"wallet was opened at {shop.wallet_opened_at.isoformat()}",
            )
        )

    # 3. From the trade's completion to the refund's start: at most the clawback limit (规定时效).
    if order.completed_at is None:
        violations.append(
            Violation(
                ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW, "the order's trade never completed"
            )
        )
    elif started_at - order.completed_at > policy.clawback_window:
        days = int((started_at - order.completed_at).total_seconds()) // DAY_SECONDS
        violations.append(
            Violation(
                ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,
                f"the refund started {days} days after the trade completed; commissions are "
                f"recovered within {_duration(policy.clawback_window)}",
            )
        )

    # Only late refunds: inside the regular period commissions are settled before payout.
    if entry_opened_at is None:
        violations.append(
            Violation(
                ReasonCode.NOT_A_LATE_REFUND,
                "the refund did not come through a re-opened after-sales entry",
            )
        )
    elif started_at < entry_opened_at:
        violations.append(
            Violation(
                ReasonCode.NOT_A_LATE_REFUND,
                f"the refund started at {started_at.isoformat()}, before its entry was opened at "
                f"{entry_opened_at.isoformat()}",
            )
        )
    return tuple(violations)


def line_due(commission: int, paid: int, refunded_before: int, refunded_after: int) -> int:
    """What one refund owes back of one commission line: its slice of the commission in
    proportion to the refunded amount over the paid amount.

    Taking the difference of the rounded-down cumulative shares means any sequence of partial
    refunds never recovers more than the commission, and refunding everything in parts recovers
    exactly the commission, the same as one full refund.
    """
    return commission * refunded_after // paid - commission * refunded_before // paid


def clawback_lines(
    order: Order, refunded_before: int, refunded_after: int
) -> tuple[ClawbackLine, ...]:
    return tuple(
        ClawbackLine(
            line_no=i,
            payee_kind=line.payee_kind,
            payee_id=line.payee_id,
            commission=line.amount,
            due=line_due(line.amount, order.paid_amount, refunded_before, refunded_after),
        )
        for i, line in enumerate(order.commission_lines)
    )


def recoverable_now(line: ClawbackLine, payee_balance: int) -> int:
    """A payee whose cash balance is short gives what it has, never going below zero; the
    platform's commission account always gives back its fee in full."""
    if line.payee_kind is PayeeKind.TECHNICAL_SERVICE_FEE:
        return line.outstanding
    return min(line.outstanding, max(payee_balance, 0))


def recover(
    lines: Sequence[ClawbackLine],
    balances: dict[AccountRef, int],
    owing: Collection[AccountRef] = (),
) -> tuple[tuple[ClawbackLine, ...], dict[AccountRef, int]]:
    """Each line takes what its account gives now (recoverable_now), in line order, each taking
    from what the ones before it left; returns the lines with `recovered` set and the balances
    after. A line with nothing due takes nothing, and the technical service fee is given back
    whatever the platform's balance: neither account need be among `balances`.

    `owing`: payees' accounts whose older debts are still being paid (the sweeper pays on,
    oldest first): their cash is those debts' first, so a line on one takes nothing now and
    waits its turn, outstanding, behind them."""
    left = dict(balances)
    taken = []
    for line in lines:
        if needs_balance(line):
            available = 0 if line.account in owing else left[line.account]
            take = recoverable_now(line, available)
            left[line.account] -= take
        else:
            take = line.outstanding if line.due else 0
        taken.append(dataclasses.replace(line, recovered=take))
    return tuple(taken), left


def needs_balance(line: ClawbackLine) -> bool:
    """Whether what `line` recovers depends on its account's balance (which must then be read,
    and locked, before recovering)."""
    return line.due > 0 and line.payee_kind is not PayeeKind.TECHNICAL_SERVICE_FEE


def settle_debts(balance: int, outstanding: list[int]) -> list[int]:
    """What money reaching a cash account pays on its outstanding debts, oldest first."""
    paid = []
    for owed in outstanding:
        amount = min(owed, max(balance, 0))
        paid.append(amount)
        balance -= amount
    return paid
