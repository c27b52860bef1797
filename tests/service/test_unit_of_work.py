"""Who owns the transaction: the outermost unit of work a use case opens, and nothing else."""

from __future__ import annotations

import pytest

from server.domain.errors import NotFound
from server.domain.model import Shop, ShopStatus, Staff, StaffRole


def test_use_cases_called_inside_one_unit_of_work_commit_together(service):
    with service.unit_of_work():
        service.put_shop(Shop("shop-1", "One", ShopStatus.NORMAL, None))
        service.put_staff(Staff("staff-1", "shop-1", StaffRole.OWNER, "Owner"))
        assert service.shop_exists("shop-1")

    assert service.shop_exists("shop-1")


def test_a_refusal_anywhere_inside_rolls_back_what_the_use_cases_before_it_wrote(service):
    with pytest.raises(NotFound), service.unit_of_work():
        service.put_shop(Shop("shop-1", "One", ShopStatus.NORMAL, None))
        service.put_staff(Staff("staff-1", "shop-unknown", StaffRole.OWNER, "Owner"))

    assert not service.shop_exists("shop-1")


def test_a_use_case_that_writes_is_refused_inside_a_read_only_one(service):
    with pytest.raises(RuntimeError, match="read-only"), service.unit_of_work(read_only=True):
        service.put_shop(Shop("shop-1", "One", ShopStatus.NORMAL, None))

    assert not service.shop_exists("shop-1")
