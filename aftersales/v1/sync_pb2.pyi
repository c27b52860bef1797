from aftersales.v1 import resources_pb2 as _resources_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutShopRequest(_message.Message):
    __slots__ = ("shop",)
    SHOP_FIELD_NUMBER: _ClassVar[int]
    shop: _resources_pb2.Shop
    def __init__(self, shop: _Optional[_Union[_resources_pb2.Shop, _Mapping]] = ...) -> None: ...

class PutStaffRequest(_message.Message):
    __slots__ = ("staff",)
    STAFF_FIELD_NUMBER: _ClassVar[int]
    staff: _resources_pb2.Staff
    def __init__(self, staff: _Optional[_Union[_resources_pb2.Staff, _Mapping]] = ...) -> None: ...

class PutOrderRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _resources_pb2.Order
    def __init__(self, order: _Optional[_Union[_resources_pb2.Order, _Mapping]] = ...) -> None: ...

class PostFundsRequest(_message.Message):
    __slots__ = ("request_id", "account", "amount", "memo")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account: _resources_pb2.AccountRef
    amount: int
    memo: str
    def __init__(self, request_id: _Optional[str] = ..., account: _Optional[_Union[_resources_pb2.AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., memo: _Optional[str] = ...) -> None: ...

class PostFundsResponse(_message.Message):
    __slots__ = ("transfer", "balance")
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    transfer: _resources_pb2.Transfer
    balance: _resources_pb2.Balance
    def __init__(self, transfer: _Optional[_Union[_resources_pb2.Transfer, _Mapping]] = ..., balance: _Optional[_Union[_resources_pb2.Balance, _Mapping]] = ...) -> None: ...
