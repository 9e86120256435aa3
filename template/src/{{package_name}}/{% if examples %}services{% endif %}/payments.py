"""Money transfers: a savepoint, rows locked in a fixed order, the balance checked under lock."""

import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import InsufficientFundsError, InvalidOperationError, NotFoundError
from ..models import PaymentAccount, PaymentTransfer
from ..repositories.queries import flush


async def transfer(
    session: AsyncSession, from_account_id: uuid.UUID, to_account_id: uuid.UUID, amount: Decimal
) -> PaymentTransfer:
    """Move `amount` between two accounts, or change nothing.

    * Both rows are locked `FOR UPDATE` in key order, so two opposite transfers running at
      the same time wait for each other instead of deadlocking.
    * The balance is read under that lock (`populate_existing` refreshes any stale copy in
      the identity map), so concurrent transfers can never overdraw an account.
    * The work runs in a SAVEPOINT: a failed transfer (e.g. `InsufficientFundsError`) rolls
      back to it and leaves the caller's outer transaction intact.
    """
    if amount <= 0:
        raise InvalidOperationError("the amount must be positive")
    if from_account_id == to_account_id:
        raise InvalidOperationError("cannot transfer to the same account")

    async with session.begin_nested():
        locked = await session.scalars(
            select(PaymentAccount)
            .where(PaymentAccount.public_id.in_([from_account_id, to_account_id]))
            .order_by(PaymentAccount.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        accounts = {account.public_id: account for account in locked}
        for public_id in (from_account_id, to_account_id):
            if public_id not in accounts:
                raise NotFoundError("PaymentAccount", public_id)
        source, target = accounts[from_account_id], accounts[to_account_id]
        if source.balance < amount:
            raise InsufficientFundsError(f"account {from_account_id} has insufficient funds")
        source.balance -= amount
        target.balance += amount
        record = PaymentTransfer(from_account_id=source.id, to_account_id=target.id, amount=amount)
        session.add(record)
        await flush(session)
    return record
