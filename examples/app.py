"""An example taskstream app: `taskstream dev examples.app:app`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from taskstream import App

app = App("examples")


@app.task
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@app.task
def divide(a: float, b: float) -> float:
    """Fails with ZeroDivisionError when b is 0: the error comes back with its traceback."""
    return a / b


@dataclass
class Order:
    order_id: str
    amount_cents: int
    items: list[str]
    placed_at: datetime


@dataclass
class Receipt:
    order_id: str
    total_cents: int
    item_count: int


@app.task(queue="orders")
async def process_order(order: Order, discount_percent: int = 0) -> Receipt:
    """An async task on its own queue, with records in and out. Send it with
    ``key=order.order_id``-style keys to keep one customer's orders in sequence."""
    await asyncio.sleep(0.01)  # pretend to call a payment service
    total = order.amount_cents * (100 - discount_percent) // 100
    return Receipt(order.order_id, total, len(order.items))
