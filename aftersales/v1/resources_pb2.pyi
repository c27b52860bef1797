import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReasonCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_CODE_UNSPECIFIED: _ClassVar[ReasonCode]
    COMPLETION_WINDOW_EXCEEDED: _ClassVar[ReasonCode]
    ORDER_NOT_COMPLETED: _ClassVar[ReasonCode]
    WITHIN_AFTER_SALES_PERIOD: _ClassVar[ReasonCode]
    INSUFFICIENT_GUARANTEE: _ClassVar[ReasonCode]
    SHOP_NOT_OPERATING: _ClassVar[ReasonCode]
    ORDER_KIND_NOT_SUPPORTED: _ClassVar[ReasonCode]
    NOTHING_REFUNDABLE: _ClassVar[ReasonCode]
    ENTRY_ALREADY_OPEN: _ClassVar[ReasonCode]
    OPERATOR_NOT_ALLOWED: _ClassVar[ReasonCode]
    MARKETING_CAMPAIGN_NOT_ALLOWED: _ClassVar[ReasonCode]
    ENTRY_NOT_OPEN: _ClassVar[ReasonCode]
    AMOUNT_EXCEEDS_REFUNDABLE: _ClassVar[ReasonCode]
    BUYER_NOT_ORDER_OWNER: _ClassVar[ReasonCode]
    INSUFFICIENT_FUNDS: _ClassVar[ReasonCode]
    ORDER_FACTS_FROZEN: _ClassVar[ReasonCode]
    CATEGORY_NOT_DESIGNATED: _ClassVar[ReasonCode]
    ORDER_BEFORE_WALLET_OPENED: _ClassVar[ReasonCode]
    REFUND_OUTSIDE_CLAWBACK_WINDOW: _ClassVar[ReasonCode]
    NOT_A_LATE_REFUND: _ClassVar[ReasonCode]
    APPLICATION_NOT_OF_ORDER: _ClassVar[ReasonCode]
    REFUND_ID_REUSED: _ClassVar[ReasonCode]
    AMOUNT_EXCEEDS_APPLICATION: _ClassVar[ReasonCode]
    REQUEST_ID_REUSED: _ClassVar[ReasonCode]

class TransferKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_KIND_UNSPECIFIED: _ClassVar[TransferKind]
    TRANSFER_KIND_FUNDS_IN: _ClassVar[TransferKind]
    TRANSFER_KIND_FUNDS_OUT: _ClassVar[TransferKind]
    TRANSFER_KIND_REFUND_PAYMENT: _ClassVar[TransferKind]
    TRANSFER_KIND_CLAWBACK: _ClassVar[TransferKind]
    TRANSFER_KIND_DEBT_RECOVERY: _ClassVar[TransferKind]

class ClawbackState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAWBACK_STATE_UNSPECIFIED: _ClassVar[ClawbackState]
    CLAWBACK_STATE_RECOVERED: _ClassVar[ClawbackState]
    CLAWBACK_STATE_PARTIAL: _ClassVar[ClawbackState]
    CLAWBACK_STATE_OUTSTANDING: _ClassVar[ClawbackState]
    CLAWBACK_STATE_NOT_ELIGIBLE: _ClassVar[ClawbackState]

class ClawbackLineState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAWBACK_LINE_STATE_UNSPECIFIED: _ClassVar[ClawbackLineState]
    CLAWBACK_LINE_STATE_RECOVERED: _ClassVar[ClawbackLineState]
    CLAWBACK_LINE_STATE_PARTIAL: _ClassVar[ClawbackLineState]
    CLAWBACK_LINE_STATE_OUTSTANDING: _ClassVar[ClawbackLineState]

class ShopStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHOP_STATUS_UNSPECIFIED: _ClassVar[ShopStatus]
    SHOP_STATUS_NORMAL: _ClassVar[ShopStatus]
    SHOP_STATUS_SUSPENDED: _ClassVar[ShopStatus]
    SHOP_STATUS_CLOSED: _ClassVar[ShopStatus]

class StaffRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAFF_ROLE_UNSPECIFIED: _ClassVar[StaffRole]
    STAFF_ROLE_OWNER: _ClassVar[StaffRole]
    STAFF_ROLE_ADMIN: _ClassVar[StaffRole]
    STAFF_ROLE_CS_ADMIN: _ClassVar[StaffRole]
    STAFF_ROLE_CS_AGENT: _ClassVar[StaffRole]
    STAFF_ROLE_FINANCE: _ClassVar[StaffRole]
    STAFF_ROLE_OPERATIONS: _ClassVar[StaffRole]

class OrderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_KIND_UNSPECIFIED: _ClassVar[OrderKind]
    ORDER_KIND_ORDINARY: _ClassVar[OrderKind]
    ORDER_KIND_CROSS_BORDER: _ClassVar[OrderKind]
    ORDER_KIND_PRESALE: _ClassVar[OrderKind]

class PayeeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYEE_KIND_UNSPECIFIED: _ClassVar[PayeeKind]
    PAYEE_KIND_INFLUENCER: _ClassVar[PayeeKind]
    PAYEE_KIND_GROUP_LEADER: _ClassVar[PayeeKind]
    PAYEE_KIND_AFFILIATE: _ClassVar[PayeeKind]
    PAYEE_KIND_TECHNICAL_SERVICE_FEE: _ClassVar[PayeeKind]

class AccountKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_KIND_UNSPECIFIED: _ClassVar[AccountKind]
    ACCOUNT_KIND_ANXIN_WALLET: _ClassVar[AccountKind]
    ACCOUNT_KIND_DEPOSIT: _ClassVar[AccountKind]
    ACCOUNT_KIND_CASH: _ClassVar[AccountKind]
    ACCOUNT_KIND_PLATFORM_COMMISSION: _ClassVar[AccountKind]
    ACCOUNT_KIND_EXTERNAL: _ClassVar[AccountKind]

class EntryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_STATE_UNSPECIFIED: _ClassVar[EntryState]
    ENTRY_STATE_OPEN: _ClassVar[EntryState]
    ENTRY_STATE_USED: _ClassVar[EntryState]
    ENTRY_STATE_EXPIRED: _ClassVar[EntryState]

class ApplicationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPLICATION_STATE_UNSPECIFIED: _ClassVar[ApplicationState]
    APPLICATION_STATE_FILED: _ClassVar[ApplicationState]
    APPLICATION_STATE_REFUNDED: _ClassVar[ApplicationState]
REASON_CODE_UNSPECIFIED: ReasonCode
COMPLETION_WINDOW_EXCEEDED: ReasonCode
ORDER_NOT_COMPLETED: ReasonCode
WITHIN_AFTER_SALES_PERIOD: ReasonCode
INSUFFICIENT_GUARANTEE: ReasonCode
SHOP_NOT_OPERATING: ReasonCode
ORDER_KIND_NOT_SUPPORTED: ReasonCode
NOTHING_REFUNDABLE: ReasonCode
ENTRY_ALREADY_OPEN: ReasonCode
OPERATOR_NOT_ALLOWED: ReasonCode
MARKETING_CAMPAIGN_NOT_ALLOWED: ReasonCode
ENTRY_NOT_OPEN: ReasonCode
AMOUNT_EXCEEDS_REFUNDABLE: ReasonCode
BUYER_NOT_ORDER_OWNER: ReasonCode
INSUFFICIENT_FUNDS: ReasonCode
ORDER_FACTS_FROZEN: ReasonCode
CATEGORY_NOT_DESIGNATED: ReasonCode
ORDER_BEFORE_WALLET_OPENED: ReasonCode
REFUND_OUTSIDE_CLAWBACK_WINDOW: ReasonCode
NOT_A_LATE_REFUND: ReasonCode
APPLICATION_NOT_OF_ORDER: ReasonCode
REFUND_ID_REUSED: ReasonCode
AMOUNT_EXCEEDS_APPLICATION: ReasonCode
REQUEST_ID_REUSED: ReasonCode
TRANSFER_KIND_UNSPECIFIED: TransferKind
TRANSFER_KIND_FUNDS_IN: TransferKind
TRANSFER_KIND_FUNDS_OUT: TransferKind
TRANSFER_KIND_REFUND_PAYMENT: TransferKind
TRANSFER_KIND_CLAWBACK: TransferKind
TRANSFER_KIND_DEBT_RECOVERY: TransferKind
CLAWBACK_STATE_UNSPECIFIED: ClawbackState
CLAWBACK_STATE_RECOVERED: ClawbackState
CLAWBACK_STATE_PARTIAL: ClawbackState
CLAWBACK_STATE_OUTSTANDING: ClawbackState
CLAWBACK_STATE_NOT_ELIGIBLE: ClawbackState
CLAWBACK_LINE_STATE_UNSPECIFIED: ClawbackLineState
CLAWBACK_LINE_STATE_RECOVERED: ClawbackLineState
CLAWBACK_LINE_STATE_PARTIAL: ClawbackLineState
CLAWBACK_LINE_STATE_OUTSTANDING: ClawbackLineState
SHOP_STATUS_UNSPECIFIED: ShopStatus
SHOP_STATUS_NORMAL: ShopStatus
SHOP_STATUS_SUSPENDED: ShopStatus
SHOP_STATUS_CLOSED: ShopStatus
STAFF_ROLE_UNSPECIFIED: StaffRole
STAFF_ROLE_OWNER: StaffRole
STAFF_ROLE_ADMIN: StaffRole
STAFF_ROLE_CS_ADMIN: StaffRole
STAFF_ROLE_CS_AGENT: StaffRole
STAFF_ROLE_FINANCE: StaffRole
STAFF_ROLE_OPERATIONS: StaffRole
ORDER_KIND_UNSPECIFIED: OrderKind
ORDER_KIND_ORDINARY: OrderKind
ORDER_KIND_CROSS_BORDER: OrderKind
ORDER_KIND_PRESALE: OrderKind
PAYEE_KIND_UNSPECIFIED: PayeeKind
PAYEE_KIND_INFLUENCER: PayeeKind
PAYEE_KIND_GROUP_LEADER: PayeeKind
PAYEE_KIND_AFFILIATE: PayeeKind
PAYEE_KIND_TECHNICAL_SERVICE_FEE: PayeeKind
ACCOUNT_KIND_UNSPECIFIED: AccountKind
ACCOUNT_KIND_ANXIN_WALLET: AccountKind
ACCOUNT_KIND_DEPOSIT: AccountKind
ACCOUNT_KIND_CASH: AccountKind
ACCOUNT_KIND_PLATFORM_COMMISSION: AccountKind
ACCOUNT_KIND_EXTERNAL: AccountKind
ENTRY_STATE_UNSPECIFIED: EntryState
ENTRY_STATE_OPEN: EntryState
ENTRY_STATE_USED: EntryState
ENTRY_STATE_EXPIRED: EntryState
APPLICATION_STATE_UNSPECIFIED: ApplicationState
APPLICATION_STATE_FILED: ApplicationState
APPLICATION_STATE_REFUNDED: ApplicationState

class Violation(_message.Message):
    __slots__ = ("code", "description")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    code: ReasonCode
    description: str
    def __init__(self, code: _Optional[_Union[ReasonCode, str]] = ..., description: _Optional[str] = ...) -> None: ...

class Shop(_message.Message):
    __slots__ = ("shop_id", "name", "status", "wallet_opened_at", "version")
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WALLET_OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    shop_id: str
    name: str
    status: ShopStatus
    wallet_opened_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, shop_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[ShopStatus, str]] = ..., wallet_opened_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class Staff(_message.Message):
    __slots__ = ("staff_id", "shop_id", "role", "name", "version")
    STAFF_ID_FIELD_NUMBER: _ClassVar[int]
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    staff_id: str
    shop_id: str
    role: StaffRole
    name: str
    version: int
    def __init__(self, staff_id: _Optional[str] = ..., shop_id: _Optional[str] = ..., role: _Optional[_Union[StaffRole, str]] = ..., name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CommissionLine(_message.Message):
    __slots__ = ("payee_kind", "payee_id", "amount")
    PAYEE_KIND_FIELD_NUMBER: _ClassVar[int]
    PAYEE_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    payee_kind: PayeeKind
    payee_id: str
    amount: int
    def __init__(self, payee_kind: _Optional[_Union[PayeeKind, str]] = ..., payee_id: _Optional[str] = ..., amount: _Optional[int] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "shop_id", "buyer_id", "kind", "marketing_campaign", "category_id", "paid_amount", "prior_refunded_amount", "refunded_amount", "refundable_amount", "created_at", "completed_at", "after_sales_ends_at", "commission_lines", "version")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MARKETING_CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    PAID_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PRIOR_REFUNDED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUNDABLE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SALES_ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_LINES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    shop_id: str
    buyer_id: str
    kind: OrderKind
    marketing_campaign: bool
    category_id: str
    paid_amount: int
    prior_refunded_amount: int
    refunded_amount: int
    refundable_amount: int
    created_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    after_sales_ends_at: _timestamp_pb2.Timestamp
    commission_lines: _containers.RepeatedCompositeFieldContainer[CommissionLine]
    version: int
    def __init__(self, order_id: _Optional[str] = ..., shop_id: _Optional[str] = ..., buyer_id: _Optional[str] = ..., kind: _Optional[_Union[OrderKind, str]] = ..., marketing_campaign: _Optional[bool] = ..., category_id: _Optional[str] = ..., paid_amount: _Optional[int] = ..., prior_refunded_amount: _Optional[int] = ..., refunded_amount: _Optional[int] = ..., refundable_amount: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_sales_ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., commission_lines: _Optional[_Iterable[_Union[CommissionLine, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("entry_id", "order_id", "shop_id", "state", "opened_at", "expires_at", "operator_id", "note", "policy_version", "used_at", "application_id", "closed_at")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    USED_AT_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    order_id: str
    shop_id: str
    state: EntryState
    opened_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    operator_id: str
    note: str
    policy_version: str
    used_at: _timestamp_pb2.Timestamp
    application_id: str
    closed_at: _timestamp_pb2.Timestamp
    def __init__(self, entry_id: _Optional[str] = ..., order_id: _Optional[str] = ..., shop_id: _Optional[str] = ..., state: _Optional[_Union[EntryState, str]] = ..., opened_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operator_id: _Optional[str] = ..., note: _Optional[str] = ..., policy_version: _Optional[str] = ..., used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., application_id: _Optional[str] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Application(_message.Message):
    __slots__ = ("application_id", "order_id", "entry_id", "buyer_id", "amount", "reason", "state", "filed_at")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    order_id: str
    entry_id: str
    buyer_id: str
    amount: int
    reason: str
    state: ApplicationState
    filed_at: _timestamp_pb2.Timestamp
    def __init__(self, application_id: _Optional[str] = ..., order_id: _Optional[str] = ..., entry_id: _Optional[str] = ..., buyer_id: _Optional[str] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ..., state: _Optional[_Union[ApplicationState, str]] = ..., filed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AccountRef(_message.Message):
    __slots__ = ("kind", "owner_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    kind: AccountKind
    owner_id: str
    def __init__(self, kind: _Optional[_Union[AccountKind, str]] = ..., owner_id: _Optional[str] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("account", "balance")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    account: AccountRef
    balance: int
    def __init__(self, account: _Optional[_Union[AccountRef, _Mapping]] = ..., balance: _Optional[int] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("transfer_id", "from_account", "to_account", "amount", "kind", "reference", "posted_at", "memo")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    from_account: AccountRef
    to_account: AccountRef
    amount: int
    kind: TransferKind
    reference: str
    posted_at: _timestamp_pb2.Timestamp
    memo: str
    def __init__(self, transfer_id: _Optional[str] = ..., from_account: _Optional[_Union[AccountRef, _Mapping]] = ..., to_account: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., kind: _Optional[_Union[TransferKind, str]] = ..., reference: _Optional[str] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., memo: _Optional[str] = ...) -> None: ...

class ClawbackLine(_message.Message):
    __slots__ = ("line_no", "payee_kind", "payee_id", "account", "commission", "due", "recovered", "outstanding", "state")
    LINE_NO_FIELD_NUMBER: _ClassVar[int]
    PAYEE_KIND_FIELD_NUMBER: _ClassVar[int]
    PAYEE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_FIELD_NUMBER: _ClassVar[int]
    DUE_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    line_no: int
    payee_kind: PayeeKind
    payee_id: str
    account: AccountRef
    commission: int
    due: int
    recovered: int
    outstanding: int
    state: ClawbackLineState
    def __init__(self, line_no: _Optional[int] = ..., payee_kind: _Optional[_Union[PayeeKind, str]] = ..., payee_id: _Optional[str] = ..., account: _Optional[_Union[AccountRef, _Mapping]] = ..., commission: _Optional[int] = ..., due: _Optional[int] = ..., recovered: _Optional[int] = ..., outstanding: _Optional[int] = ..., state: _Optional[_Union[ClawbackLineState, str]] = ...) -> None: ...

class RefundClawback(_message.Message):
    __slots__ = ("clawback_id", "refund_id", "order_id", "shop_id", "application_id", "refund_amount", "refund_started_at", "refund_paid_at", "refunded_before", "refunded_after", "paid_from_wallet", "paid_from_deposit", "state", "reasons", "lines", "due", "recovered", "outstanding", "policy_version", "created_at")
    CLAWBACK_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUND_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUND_PAID_AT_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_AFTER_FIELD_NUMBER: _ClassVar[int]
    PAID_FROM_WALLET_FIELD_NUMBER: _ClassVar[int]
    PAID_FROM_DEPOSIT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    DUE_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    clawback_id: str
    refund_id: str
    order_id: str
    shop_id: str
    application_id: str
    refund_amount: int
    refund_started_at: _timestamp_pb2.Timestamp
    refund_paid_at: _timestamp_pb2.Timestamp
    refunded_before: int
    refunded_after: int
    paid_from_wallet: int
    paid_from_deposit: int
    state: ClawbackState
    reasons: _containers.RepeatedCompositeFieldContainer[Violation]
    lines: _containers.RepeatedCompositeFieldContainer[ClawbackLine]
    due: int
    recovered: int
    outstanding: int
    policy_version: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, clawback_id: _Optional[str] = ..., refund_id: _Optional[str] = ..., order_id: _Optional[str] = ..., shop_id: _Optional[str] = ..., application_id: _Optional[str] = ..., refund_amount: _Optional[int] = ..., refund_started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refund_paid_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refunded_before: _Optional[int] = ..., refunded_after: _Optional[int] = ..., paid_from_wallet: _Optional[int] = ..., paid_from_deposit: _Optional[int] = ..., state: _Optional[_Union[ClawbackState, str]] = ..., reasons: _Optional[_Iterable[_Union[Violation, _Mapping]]] = ..., lines: _Optional[_Iterable[_Union[ClawbackLine, _Mapping]]] = ..., due: _Optional[int] = ..., recovered: _Optional[int] = ..., outstanding: _Optional[int] = ..., policy_version: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
