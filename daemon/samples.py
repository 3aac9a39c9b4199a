"""Sample files written by ingestd itself, shaped like the real exports.

`ingestd init` drops them beside a new config (the Quick start loads one),
and the tests and benchmarks use them. They are made up, deterministic (the
same bytes on every run), and carry the quirks of the files they stand for:

- Fitbit CSV exports (the example sources): CRLF line ends, ``M/D/YYYY``
  dates, 12-hour ``h:MM:SS AM`` times, distances that went through a
  spreadsheet's single-precision floats (``1.879999995``), no line end after
  the last row of the daily activity file; the row counts and users of the
  Fitabase export (940 days of 33 users, 413 nights of 24, 22,099 hours of
  33, a 49-row heart-rate excerpt).
- Bank of Canada Valet answers: a JSON observations answer of 26 series over
  253 business days of 2024, three of them discontinued (absent from every
  observation), and a CSV download with a UTF-8 byte order mark and its three
  sections (TERMS AND CONDITIONS, SERIES, OBSERVATIONS).
"""
from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

FIRST_DAY = date(2016, 4, 12)
# The first user of the export and the first row of its daily file: the
# shape the docs and tests quote.
FIRST_ID = 1503960366
FIRST_DAILY_ROW = "1503960366,4/12/2016,13162,8.5,8.5,0,1.879999995,0.550000012,6.059999943,0,25,13,328,728,1985"
DAILY_HEADER = ("Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,VeryActiveDistance,"
                "ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,VeryActiveMinutes,"
                "FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories")


def _users(rng: random.Random, count: int) -> list[int]:
    others = sorted(rng.sample(range(1_600_000_000, 9_000_000_000), count - 1))
    return [FIRST_ID, *others]


def _split(rng: random.Random, total: int, parts: int, most: int) -> list[int]:
    """``parts`` counts of at most ``most`` that add up to ``total``."""
    counts = [most] * parts
    while sum(counts) > total:
        i = rng.randrange(parts)
        if counts[i] > 1:
            counts[i] -= 1
    return counts


def spreadsheet_float(value: float) -> str:
    """``value`` as it comes out of a spreadsheet that held it as a single-
    precision float, shown to nine decimals: 1.88 is ``1.879999995``."""
    single = struct.unpack("f", struct.pack("f", value))[0]
    text = f"{single:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _day(d: date) -> str:
    return f"{d.month}/{d.day}/{d.year}"


def _clock(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{_day(moment.date())} {hour}:{moment:%M:%S} {'AM' if moment.hour < 12 else 'PM'}"


def _csv(header: str, rows: list[str], final_newline: bool = True) -> bytes:
    return ("\r\n".join([header, *rows]) + ("\r\n" if final_newline else "")).encode("ascii")


def daily_activity(rows: int = 940) -> bytes:
    """``dailyActivity_merged.csv``: one row per user and day."""
    rng = random.Random(1)
    users = _users(rng, 33)
    lines: list[str] = []
    for user, days in zip(users, _split(rng, rows, len(users), 31), strict=True):
        for n in range(days):
            if not lines:
                lines.append(FIRST_DAILY_ROW)
                continue
            steps = rng.randint(0, 20000)
            very, moderate, light = (round(rng.uniform(0, high), 2) for high in (4, 1.5, 7))
            total = round(very + moderate + light, 2)
            very_min, fair_min, light_min = rng.randint(0, 90), rng.randint(0, 60), rng.randint(0, 400)
            sedentary = rng.randint(300, 1440 - very_min - fair_min - light_min)
            values = [str(user), _day(FIRST_DAY + timedelta(days=n)), str(steps), spreadsheet_float(total),
                      spreadsheet_float(total), "0", spreadsheet_float(very), spreadsheet_float(moderate),
                      spreadsheet_float(light), "0", str(very_min), str(fair_min), str(light_min), str(sedentary),
                      str(rng.randint(1400, 4000))]
            lines.append(",".join(values))
    return _csv(DAILY_HEADER, lines, final_newline=False)


def sleep_day(rows: int = 413) -> bytes:
    """``sleepDay_merged.csv``: nights of 24 users, at ``12:00:00 AM``."""
    rng = random.Random(2)
    users = _users(rng, 24)
    lines = []
    for user, nights in zip(users, _split(rng, rows, len(users), 31), strict=True):
        for n in range(nights):
            asleep = rng.randint(60, 775)
            lines.append(f"{user},{_clock(datetime.combine(FIRST_DAY + timedelta(days=n), datetime.min.time()))},"
                         f"{1 + (rng.random() < 0.1)},{asleep},{asleep + rng.randint(0, 90)}")
    return _csv("Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed", lines)


def hourly_steps(rows: int = 22099) -> bytes:
    """``hourlySteps_merged.csv``: hours of 33 users, 12-hour clock."""
    rng = random.Random(3)
    users = _users(rng, 33)
    start = datetime.combine(FIRST_DAY, datetime.min.time())
    lines = []
    for user, hours in zip(users, _split(rng, rows, len(users), 736), strict=True):
        for n in range(hours):
            moment = start + timedelta(hours=n)
            quiet = moment.hour < 6 or moment.hour > 22
            lines.append(f"{user},{_clock(moment)},{rng.randint(0, 60) if quiet else rng.randint(0, 1800)}")
    return _csv("Id,ActivityHour,StepTotal", lines)


def heart_rate(rows: int = 49) -> bytes:
    """``heartrate_seconds_merged_excerpt.csv``: one user, every 5 to 15 seconds."""
    rng = random.Random(4)
    moment = datetime(2016, 4, 12, 7, 21)
    lines = []
    for _ in range(rows):
        lines.append(f"2022484408,{_clock(moment)},{rng.randint(58, 110)}")
        moment += timedelta(seconds=rng.choice((5, 5, 5, 10, 15)))
    return _csv("Id,Time,Value", lines)


# Each series' rate in CAD at the start of the walk, of the real magnitude
# (down to the Indonesian rupiah's 0.000086).
VALET_SERIES = {"AUD": 0.9036, "BRL": 0.2734, "CNY": 0.1849, "EUR": 1.4656, "HKD": 0.1691, "INR": 0.01586,
                "IDR": 0.000086, "JPY": 0.00929, "MYR": 0.2851, "MXN": 0.07797, "NZD": 0.8368, "NOK": 0.1307,
                "PEN": 0.3576, "RUB": 0.01439, "SAR": 0.3521, "SGD": 0.9999, "ZAR": 0.07176, "KRW": 0.00102,
                "SEK": 0.1327, "CHF": 1.561, "TWD": 0.04269, "THB": 0.03789, "TRY": 0.0449, "GBP": 1.6878,
                "USD": 1.3205, "VND": 0.0000543}
# Closed days of the Bank of Canada in 2024 (and the 2023 ones in range).
VALET_HOLIDAYS = {date(2024, 1, 1), date(2024, 2, 19), date(2024, 3, 29), date(2024, 5, 20), date(2024, 7, 1),
                  date(2024, 8, 5), date(2024, 9, 2), date(2024, 9, 30), date(2024, 10, 14), date(2024, 11, 11),
                  date(2024, 12, 25), date(2024, 12, 26)}
VALET_DISCONTINUED = ("MYR", "THB", "VND")  # listed in seriesDetail, absent from every observation


def _business_days(first: date, last: date) -> list[date]:
    days, d = [], first
    while d <= last:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def _rate_walk(rng: random.Random, start: float, days: int) -> list[float]:
    rates, rate = [], start
    for _ in range(days):
        rate *= 1 + rng.gauss(0, 0.004)
        rates.append(rate)
    return rates


def _rate_text(rate: float) -> str:
    """Four decimals, or four significant digits below 0.1, as Valet writes
    them (1.3205, 0.07797, 0.000086)."""
    return f"{rate:.4f}" if rate >= 0.1 else f"{rate:.4g}" if rate >= 0.0001 else f"{rate:.6f}"


def valet_observations_json(first: date = date(2023, 12, 27), last: date = date(2024, 12, 31)) -> bytes:
    """A Valet ``/observations/<series>/json`` answer (253 days by default)."""
    rng = random.Random(5)
    days = [d for d in _business_days(first, last) if d not in VALET_HOLIDAYS]
    walks = {code: _rate_walk(rng, start, len(days)) for code, start in VALET_SERIES.items()}
    detail = {f"FX{code}CAD": {"label": f"{code}/CAD",
                               "description": f"{code} to Canadian dollar daily exchange rate",
                               "dimension": {"key": "d", "name": "Date"}} for code in VALET_SERIES}
    observations = []
    for i, d in enumerate(days):
        row: dict[str, object] = {"d": d.isoformat()}
        row.update({f"FX{code}CAD": {"v": _rate_text(walks[code][i])} for code in VALET_SERIES
                    if code not in VALET_DISCONTINUED})
        observations.append(row)
    doc = {"terms": {"url": "https://www.bankofcanada.ca/terms/"}, "seriesDetail": detail,
           "observations": observations}
    return json.dumps(doc, indent=2).encode()


def valet_observations_csv(first: date = date(2017, 1, 3), lines: int = 1376) -> bytes:
    """A Valet CSV download of FXEURCAD and FXUSDCAD: UTF-8 byte order mark,
    then its TERMS AND CONDITIONS, SERIES and OBSERVATIONS sections."""
    rng = random.Random(6)
    head = ['"TERMS AND CONDITIONS"', '"https://www.bankofcanada.ca/terms/"', "", '"SERIES"',
            '"id","label","description"',
            '"FXEURCAD","EUR/CAD","European euro to Canadian dollar daily exchange rate"',
            '"FXUSDCAD","USD/CAD","US dollar to Canadian dollar daily exchange rate"', "", '"OBSERVATIONS"',
            '"date","FXEURCAD","FXUSDCAD"', '"2017-01-03","1.3973","1.3435"']
    count = lines - len(head)
    days = _business_days(first + timedelta(days=1), first + timedelta(days=2 * count))[:count]
    eur, usd = _rate_walk(rng, 1.3973, count), _rate_walk(rng, 1.3435, count)
    body = [f'"{d.isoformat()}","{e:.4f}","{u:.4f}"' for d, e, u in zip(days, eur, usd, strict=True)]
    return ("\ufeff" + "\n".join(head + body) + "\n").encode("utf-8")


# File name → its bytes: the Fitbit exports of the example config's sources
# and the Valet answers.
FITBIT: dict[str, Callable[[], bytes]] = {
    "dailyActivity_merged.csv": daily_activity, "sleepDay_merged.csv": sleep_day,
    "hourlySteps_merged.csv": hourly_steps, "heartrate_seconds_merged_excerpt.csv": heart_rate,
}
VALET: dict[str, Callable[[], bytes]] = {
    "valet_observations_26FX_2024.raw.json": valet_observations_json,
    "valet_observations_FXEURCAD_FXUSDCAD.raw.csv": valet_observations_csv,
}


def write_samples(folder: Path, samples: dict[str, Callable[[], bytes]]) -> list[Path]:
    """Write each sample into ``folder`` (made if missing); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in samples.items():
        path = folder / name
        path.write_bytes(make())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m ingestd.daemon.samples FOLDER``: write the Fitbit samples
    (the repository's ``examples/`` is made this way)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ingestd.daemon.samples FOLDER", file=sys.stderr)
        return 2
    for path in write_samples(Path(args[0]), FITBIT):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
