import datetime

from aftersales.v1 import resources_pb2 as _resources_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckEligibilityRequest(_message.Message):
    __slots__ = ("order_id", "operator_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    operator_id: str
    def __init__(self, order_id: _Optional[str] = ..., operator_id: _Optional[str] = ...) -> None: ...

class EligibilityFacts(_message.Message):
    __slots__ = ("refundable_amount", "wallet_balance", "deposit_balance", "days_since_completion", "completed_at", "after_sales_ends_at", "shop_status", "order_kind", "marketing_campaign", "operator_role", "open_entry_id", "checked_at")
    REFUNDABLE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    WALLET_BALANCE_FIELD_NUMBER: _ClassVar[int]
    DEPOSIT_BALANCE_FIELD_NUMBER: _ClassVar[int]
    DAYS_SINCE_COMPLETION_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SALES_ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    SHOP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ORDER_KIND_FIELD_NUMBER: _ClassVar[int]
    MARKETING_CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ROLE_FIELD_NUMBER: _ClassVar[int]
    OPEN_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    refundable_amount: int
    wallet_balance: int
    deposit_balance: int
    days_since_completion: int
    completed_at: _timestamp_pb2.Timestamp
    after_sales_ends_at: _timestamp_pb2.Timestamp
    shop_status: _resources_pb2.ShopStatus
    order_kind: _resources_pb2.OrderKind
    marketing_campaign: bool
    operator_role: _resources_pb2.StaffRole
    open_entry_id: str
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, refundable_amount: _Optional[int] = ..., wallet_balance: _Optional[int] = ..., deposit_balance: _Optional[int] = ..., days_since_completion: _Optional[int] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_sales_ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., shop_status: _Optional[_Union[_resources_pb2.ShopStatus, str]] = ..., order_kind: _Optional[_Union[_resources_pb2.OrderKind, str]] = ..., marketing_campaign: _Optional[bool] = ..., operator_role: _Optional[_Union[_resources_pb2.StaffRole, str]] = ..., open_entry_id: _Optional[str] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckEligibilityResponse(_message.Message):
    __slots__ = ("eligible", "violations", "facts", "policy_version")
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    eligible: bool
    violations: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Violation]
    facts: EligibilityFacts
    policy_version: str
    def __init__(self, eligible: _Optional[bool] = ..., violations: _Optional[_Iterable[_Union[_resources_pb2.Violation, _Mapping]]] = ..., facts: _Optional[_Union[EligibilityFacts, _Mapping]] = ..., policy_version: _Optional[str] = ...) -> None: ...

class OpenEntryRequest(_message.Message):
    __slots__ = ("order_id", "operator_id", "request_id", "note")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    operator_id: str
    request_id: str
    note: str
    def __init__(self, order_id: _Optional[str] = ..., operator_id: _Optional[str] = ..., request_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class GetEntryRequest(_message.Message):
    __slots__ = ("entry_id",)
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    def __init__(self, entry_id: _Optional[str] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("shop_id", "order_id", "state", "page_size", "page_token")
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shop_id: str
    order_id: str
    state: _resources_pb2.EntryState
    page_size: int
    page_token: str
    def __init__(self, shop_id: _Optional[str] = ..., order_id: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.EntryState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_resources_pb2.Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ApplyAfterSalesRequest(_message.Message):
    __slots__ = ("order_id", "buyer_id", "amount", "reason", "request_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    buyer_id: str
    amount: int
    reason: str
    request_id: str
    def __init__(self, order_id: _Optional[str] = ..., buyer_id: _Optional[str] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
