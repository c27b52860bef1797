"""Use cases of the Clawback service: record a refund and recover its commissions (TR/佣金退回),
preview what a refund would recover, read clawbacks, balances and transfers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from server.domain import events, rules
from server.domain.access import Person
from server.domain.errors import InvalidArgument, NotFound, RulesRefused
from server.domain.model import (
    EXTERNAL,
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    ClawbackLine,
    ClawbackState,
    Movement,
    Order,
    ReasonCode,
    Refund,
    RefundClawback,
    Shop,
    Transfer,
    TransferKind,
)
from server.service.base import (
    UseCases,
    account_subject,
    deposit_of,
    order_subject,
    wallet_of,
)
from server.service.outcomes import ClawbackRecorded
from server.service.paging import Page, PageTokens, micros
from server.service.unit_of_work import UnitOfWork


class ClawbackUseCases(UseCases):
    def record_refund(self, refund: Refund, by: Actor = NOBODY) -> RefundClawback:
        """Pays the refund, and recovers the order's commissions when the rules allow, in one
        transaction. The same refund reported again returns its clawback."""
        now = self.clock.now()
        with self.unit_of_work() as uow:
            # One refund id at a time, whatever its order; then the order's row lock serialises
            # everything that moves money on this order.
            uow.serialize_on(f"refund:{refund.refund_id}")
            existing = uow.clawbacks.clawback_of_refund(refund.refund_id)
            if existing is not None:
                if existing.refund != refund:
                    raise InvalidArgument(
                        [("refund_id", f"refund {refund.refund_id} was recorded with other facts")],
                        reason=ReasonCode.REFUND_ID_REUSED,
                    )
                return existing
            order, shop = uow.facts.order_and_shop(refund.order_id, for_update=True)
            via = None
            if refund.application_id:
                via = uow.entries.applied_through(refund.application_id)
            violations = rules.check_refund(order, refund.amount, via)
            if violations:
                raise RulesRefused(
                    order_subject(order.order_id),
                    violations,
                    {"order_id": order.order_id, "refund_id": refund.refund_id},
                )
            clawback = self._clawback(
                order,
                shop,
                refund,
                now,
                entry_opened_at=via.entry_opened_at if via else None,
                clawback_id=self.new_id(),
            )
            clawback = dataclasses.replace(clawback, recorded_by=by)
            wallet, deposit = wallet_of(shop.shop_id), deposit_of(shop.shop_id)
            # Only the accounts whose balances decide something are locked up front; the
            # platform's commission account (in every late refund) is changed last.
            balances = uow.ledger.lock_accounts(
                {
                    wallet,
                    deposit,
                    *(line.account for line in clawback.lines if rules.needs_balance(line)),
                }
            )
            # Read once the payees' accounts are locked: the sweeper clears a payee's note
            # under the same lock, so it is not cleared before a debt this refund leaves.
            lines, _ = rules.recover(clawback.lines, balances, _owing(uow, clawback.lines))
            clawback = dataclasses.replace(
                clawback,
                lines=lines,
                payment=rules.split_refund_payment(refund.amount, balances[wallet]),
            )
            movements = [
                Movement(
                    from_account=source,
                    to_account=EXTERNAL,
                    amount=amount,
                    kind=TransferKind.REFUND_PAYMENT,
                    reference=f"refunds/{refund.refund_id}",
                    idempotency_key=f"refund:{refund.refund_id}:{source.kind.value}",
                )
                for source, amount in (
                    (wallet, clawback.payment.from_wallet),
                    (deposit, clawback.payment.from_deposit),
                )
                if amount
            ] + [
                Movement(
                    from_account=line.account,
                    to_account=wallet,
                    amount=line.recovered,
                    kind=TransferKind.CLAWBACK,
                    reference=f"clawbacks/{clawback.clawback_id}/lines/{line.line_no}",
                    idempotency_key=f"clawback:{clawback.clawback_id}:{line.line_no}",
                )
                for line in clawback.lines
                if line.recovered
            ]
            uow.clawbacks.record_refund(clawback)
            uow.ledger.post_transfers(
                movements,
                now=now,
                guarded={
                    m.from_account for m in movements if not rules.may_go_below_zero(m.from_account)
                },
                recorded_by=by,
            )
            uow.events.add(events.refund_recorded(clawback))
            self.happened(ClawbackRecorded(clawback))
            return clawback

    def preview_clawback(
        self,
        order_id: str,
        amount: int,
        started_at: datetime | None,
        viewer: Person | None = None,
    ) -> RefundClawback:
        """What a late refund would recover now, without writing anything."""
        now = self.clock.now()
        with self.unit_of_work(read_only=True) as uow:
            # The viewer's scope first: an unknown viewer is refused alike for every order.
            scope = self.scope(uow, viewer)
            order, shop = uow.facts.order_and_shop(order_id)
            if scope is not None and not scope.sees_money_of(order.shop_id):
                raise NotFound("order", order_id)
            violations = rules.check_refund(order, amount)
            if violations:
                raise RulesRefused(order_subject(order_id), violations, {"order_id": order_id})
            refund = Refund("", order_id, "", amount, started_at or now, now)
            # A preview is of a late refund: as if through an entry opened when it starts.
            clawback = self._clawback(
                order, shop, refund, now, entry_opened_at=refund.started_at, clawback_id=""
            )
            wallet = wallet_of(shop.shop_id)
            balances = uow.ledger.balances([wallet, *{line.account for line in clawback.lines}])
            owing = _owing(uow, clawback.lines)
        lines, left = rules.recover(clawback.lines, balances, owing)
        return dataclasses.replace(
            clawback, lines=lines, payment=rules.split_refund_payment(amount, left[wallet])
        )

    def _clawback(
        self,
        order: Order,
        shop: Shop,
        refund: Refund,
        now: datetime,
        *,
        entry_opened_at: datetime | None,
        clawback_id: str,
    ) -> RefundClawback:
        reasons = rules.check_clawback(order, shop, refund.started_at, entry_opened_at, self.policy)
        before = order.refunded_amount
        after = before + refund.amount
        return RefundClawback(
            clawback_id=clawback_id,
            refund=refund,
            shop_id=shop.shop_id,
            reasons=reasons,
            lines=() if reasons else rules.clawback_lines(order, before, after),
            refunded_before=before,
            refunded_after=after,
            policy_version=self.policy.version,
            created_at=now,
        )

    def get_clawback(
        self,
        *,
        clawback_id: str | None = None,
        refund_id: str | None = None,
        viewer: Person | None = None,
    ) -> RefundClawback:
        with self.unit_of_work(read_only=True) as uow:
            scope = self.scope(uow, viewer)
            clawback = uow.clawbacks.clawback(clawback_id=clawback_id, refund_id=refund_id)
            if scope is not None and not scope.sees_money_of(clawback.shop_id):
                # Word for word what the store says of one that does not exist.
                raise NotFound("clawback", clawback_id or f"refund {refund_id}")
            return clawback

    def list_clawbacks(
        self,
        *,
        shop_id: str,
        state: ClawbackState | None,
        start: datetime | None,
        end: datetime | None,
        page_size: int,
        page_token: str = "",
        viewer: Person | None = None,
    ) -> Page[RefundClawback]:
        """A page of the shop's clawbacks, newest first, created in [start, end)."""
        tokens = PageTokens(self.store.page_token_key)
        filters = "|".join(
            [
                shop_id,
                state.value if state else "",
                str(micros(start)) if start else "",
                str(micros(end)) if end else "",
            ]
        )
        after = tokens.decode(page_token, filters, (int, str))
        with self.unit_of_work(read_only=True) as uow:
            scope = self.scope(uow, viewer)
            if scope is not None and not scope.sees_money_of(shop_id):
                raise NotFound("shop", shop_id)
            found = uow.clawbacks.list_clawbacks(
                shop_id=shop_id,
                state=None if state is None else state.value,
                start=start,
                end=end,
                after=after,  # type: ignore[arg-type]  # checked by decode: (int, str)
                limit=page_size + 1,
            )
            if not found and not uow.facts.shop_exists(shop_id):
                raise NotFound("shop", shop_id)
        return tokens.page(
            found, page_size, filters, lambda c: (micros(c.created_at), c.clawback_id)
        )

    def balances(
        self, accounts: list[AccountRef], owner_id: str | None, viewer: Person | None = None
    ) -> dict[AccountRef, int]:
        """The named accounts' balances, and with `owner_id` every account of that owner. A
        staff member sees only its own shop's wallet and deposit."""
        with self.unit_of_work(read_only=True) as uow:
            scope = self.scope(uow, viewer)
            if scope is not None:
                if owner_id and not scope.sees_money_of(owner_id):
                    raise NotFound("shop", owner_id)
                for ref in accounts:
                    if not scope.sees_account(ref):
                        raise NotFound("account", account_subject(ref))
            refs = list(dict.fromkeys(accounts))
            if not owner_id:
                return uow.ledger.balances(refs) if refs else {}
            owned = {
                ref: balance
                for ref, balance in _accounts_of(uow, owner_id).items()
                if ref not in refs and (scope is None or scope.sees_account(ref))
            }
            if not refs:
                return owned
            # Accounts named too: every balance read by one statement, so that they add up.
            return uow.ledger.balances(refs + list(owned))

    def list_transfers(
        self,
        account: AccountRef,
        page_size: int,
        page_token: str = "",
        viewer: Person | None = None,
    ) -> Page[Transfer]:
        """A page of the transfers into or out of the account, newest first."""
        tokens = PageTokens(self.store.page_token_key)
        filters = f"{account.kind.value}|{account.owner_id}"
        after = tokens.decode(page_token, filters, (int,))
        with self.unit_of_work(read_only=True) as uow:
            scope = self.scope(uow, viewer)
            if scope is not None and not scope.sees_account(account):
                raise NotFound("account", account_subject(account))
            found = uow.ledger.list_transfers(
                account, int(after[0]) if after else None, page_size + 1
            )
            # A shop's account of a shop nobody has is not an empty one (PostFunds to it is
            # NOT_FOUND too); a payee's cash account exists once money reaches it.
            shop_account = account.kind in (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT)
            if not found and shop_account and not uow.facts.shop_exists(account.owner_id):
                raise NotFound("shop", account.owner_id)
        return tokens.page(found, page_size, filters, lambda t: (int(t.transfer_id),))


def _accounts_of(uow: UnitOfWork, owner_id: str) -> dict[AccountRef, int]:
    """Every account of the owner and its balance, by kind: those money has reached, and a
    shop's wallet and deposit from the start (at zero until money moves in them), so that two
    shops in the same state read alike. A payee's cash account is known once money reaches it."""
    owned = uow.ledger.balances_of(owner_id)
    shop_accounts = (wallet_of(owner_id), deposit_of(owner_id))
    if all(ref in owned for ref in shop_accounts) or not uow.facts.shop_exists(owner_id):
        return owned
    every = {**dict.fromkeys(shop_accounts, 0), **owned}
    return {ref: every[ref] for ref in sorted(every, key=lambda ref: ref.kind.value)}


def _owing(uow: UnitOfWork, lines: Sequence[ClawbackLine]) -> set[AccountRef]:
    """The payees' cash accounts among `lines` whose older debts the sweeper is still paying
    (rules.recover); no statement when no line's recovery depends on a payee's balance."""
    payees = {
        line.account.owner_id
        for line in lines
        if rules.needs_balance(line) and line.account.kind is AccountKind.CASH
    }
    return {AccountRef(AccountKind.CASH, p) for p in uow.clawbacks.debts_pending_among(payees)}
