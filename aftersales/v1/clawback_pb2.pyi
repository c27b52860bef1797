import datetime

from aftersales.v1 import resources_pb2 as _resources_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordRefundRequest(_message.Message):
    __slots__ = ("refund_id", "order_id", "application_id", "amount", "started_at", "paid_at", "request_id")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PAID_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    order_id: str
    application_id: str
    amount: int
    started_at: _timestamp_pb2.Timestamp
    paid_at: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, refund_id: _Optional[str] = ..., order_id: _Optional[str] = ..., application_id: _Optional[str] = ..., amount: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., paid_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PreviewClawbackRequest(_message.Message):
    __slots__ = ("order_id", "amount", "started_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    amount: int
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., amount: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetClawbackRequest(_message.Message):
    __slots__ = ("clawback_id", "refund_id")
    CLAWBACK_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    clawback_id: str
    refund_id: str
    def __init__(self, clawback_id: _Optional[str] = ..., refund_id: _Optional[str] = ...) -> None: ...

class ListClawbacksRequest(_message.Message):
    __slots__ = ("shop_id", "state", "start_time", "end_time", "page_size", "page_token")
    SHOP_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shop_id: str
    state: _resources_pb2.ClawbackState
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, shop_id: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.ClawbackState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListClawbacksResponse(_message.Message):
    __slots__ = ("clawbacks", "next_page_token")
    CLAWBACKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    clawbacks: _containers.RepeatedCompositeFieldContainer[_resources_pb2.RefundClawback]
    next_page_token: str
    def __init__(self, clawbacks: _Optional[_Iterable[_Union[_resources_pb2.RefundClawback, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetBalancesRequest(_message.Message):
    __slots__ = ("accounts", "owner_id")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[_resources_pb2.AccountRef]
    owner_id: str
    def __init__(self, accounts: _Optional[_Iterable[_Union[_resources_pb2.AccountRef, _Mapping]]] = ..., owner_id: _Optional[str] = ...) -> None: ...

class GetBalancesResponse(_message.Message):
    __slots__ = ("balances",)
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    balances: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Balance]
    def __init__(self, balances: _Optional[_Iterable[_Union[_resources_pb2.Balance, _Mapping]]] = ...) -> None: ...

class ListTransfersRequest(_message.Message):
    __slots__ = ("account", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: _resources_pb2.AccountRef
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[_Union[_resources_pb2.AccountRef, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransfersResponse(_message.Message):
    __slots__ = ("transfers", "next_page_token")
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transfers: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Transfer]
    next_page_token: str
    def __init__(self, transfers: _Optional[_Iterable[_Union[_resources_pb2.Transfer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
