"""An example tool plugin: unit conversions the dialogue model can call while it answers.

It registers two plain functions with the `register_tools` hook. Their type hints and docstrings are
all the backend needs to describe them to the model (the JSON Schema of their arguments is built
from them); the `Literal` hints become enums the backend checks every call against.
"""

from __future__ import annotations

from typing import Literal

from assistant import hookimpl

# Size of each unit in the dimension's base unit (metres, kilograms).
LENGTHS = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344}
MASSES = {"g": 0.001, "kg": 1.0, "oz": 0.028349523125, "lb": 0.45359237, "st": 6.35029318}

Unit = Literal["mm", "cm", "m", "km", "in", "ft", "yd", "mi", "g", "kg", "oz", "lb", "st"]
TemperatureUnit = Literal["C", "F", "K"]


def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> dict:
    """Convert a length or a mass from one unit to another.

    Args:
        value: the quantity to convert
        from_unit: the unit the quantity is in
        to_unit: the unit to convert it to
    """
    for table in (LENGTHS, MASSES):
        if from_unit in table and to_unit in table:
            result = value * table[from_unit] / table[to_unit]
            return {"value": round(result, 6), "unit": to_unit, "confirmation": f"{value:g} {from_unit} is {result:.4g} {to_unit}."}
    raise ValueError(f"cannot convert {from_unit} to {to_unit}: one is a length and the other a mass")


def convert_temperature(value: float, from_unit: TemperatureUnit, to_unit: TemperatureUnit) -> dict:
    """Convert a temperature between Celsius (C), Fahrenheit (F) and Kelvin (K).

    Args:
        value: the temperature to convert
        from_unit: its scale
        to_unit: the scale to convert it to
    """
    kelvin = {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[from_unit]
    if kelvin < 0:
        raise ValueError(f"{value:g} {from_unit} is below absolute zero")
    result = {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[to_unit]
    return {"value": round(result, 2), "unit": to_unit, "confirmation": f"{value:g} °{from_unit} is {result:.1f} °{to_unit}."}


@hookimpl
def register_tools(register):
    """Offer both conversions to the model."""
    register(convert_units)
    register(convert_temperature, timeout_s=2)
