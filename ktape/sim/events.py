"""Kalshi events for the simulator: groups of markets priced together from one latent value.

A Kalshi event holds many markets (PROTOCOL.md §6.4: Series → Events → Markets). The
simulator has three layouts, each series always one of them:

- `range`: mutually exclusive buckets over a number — a lower tail `-T{b0}` ("below b0",
  `strike_type` `less`, `cap_strike` b0), buckets `-B{mid}` (`between`, `floor_strike` ≤
  x < `cap_strike`) and an upper tail `-T{bn}` (`greater`, `floor_strike` bn). Exactly
  one resolves YES; the fair YES prices are the latent value's distribution over the
  buckets, discretised to $0.0001 so that they sum to exactly $1.
- `threshold`: a ladder of "above s" markets `-T{s}` (`greater`, `floor_strike` s), not
  mutually exclusive; the fair YES price is P(x > s), monotone non-increasing in s.
- `outcome`: named, mutually exclusive outcomes (a game's teams, an election's
  candidates): fair YES prices are a softmax of per-outcome strengths, summing to $1.

Why one latent value per event: it is what keeps an event's books coherent. Every market's
fair price comes from the same number, so when it moves, all of them move together, and
quotes stay on their side of fair (bids below it, asks above it), which bounds the sum of
best YES bids of a mutually exclusive event below $1 and the sum of its asks above $1.

Floats appear only inside the distribution (the normal CDF); what leaves this module is
integer prices (`*_e4`) and exact `Decimal` strikes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

UNIT_E4 = 10_000  # $1.00 in price units of $0.0001
BASE_DATE = dt.date(2026, 11, 24)  # the first event date: fixed, so tickers depend on the seed only
RANGE_MIN_MARKETS = 3  # two tails and at least one bucket, so the tails' tickers differ


@dataclass(frozen=True)
class SeriesSpec:
    """One simulated series: the layout and scale of every event it holds."""

    ticker: str
    kind: str  # "range" | "threshold" | "outcome"
    title: str  # event title, completed by the event's date
    category: str
    frequency: str
    sizes: tuple[int, int]  # markets per event, inclusive bounds
    step: Decimal = Decimal(1)  # bucket width (range) or strike spacing (threshold)
    center: Decimal = Decimal(0)  # typical middle of the ladder
    offset: Decimal = Decimal(0)  # added to every threshold strike (Kalshi's "…99.99")
    sigma_steps: tuple[float, float] = (1.0, 2.0)  # spread of the latent value, in steps
    prefix: str = ""  # how a value is written: prefix, number, suffix ("$95,000", "45°")
    suffix: str = ""
    names: tuple[str, ...] = ()  # outcome names (outcome layout)

    @property
    def min_markets(self) -> int:
        return {"range": RANGE_MIN_MARKETS, "outcome": 2}.get(self.kind, 1)

    def value_text(self, value: Decimal) -> str:
        """How a subtitle writes a value: "$94,999.99", "4.5%", "3 in" (no trailing zeros)."""
        return f"{self.prefix}{Decimal(strike_text(value)):,}{self.suffix}"


# The catalogue: five series of mutually exclusive events (range and outcome), five of
# threshold ladders. Names as Kalshi's, scales plausible.
SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("KXHIGHNY", "range", "Highest temperature in NYC", "Climate and Weather",
               "daily", (5, 9), Decimal(1), Decimal(45), suffix="°"),
    SeriesSpec("KXBTCD", "threshold", "Bitcoin price at 5pm ET", "Crypto", "daily", (6, 12),
               Decimal(250), Decimal(95_000), Decimal("-0.01"), (1.5, 3.0), prefix="$"),
    SeriesSpec("KXETHD", "threshold", "Ethereum price at 5pm ET", "Crypto", "daily", (5, 10),
               Decimal(25), Decimal(3_500), Decimal("-0.01"), (1.5, 3.0), prefix="$"),
    SeriesSpec("KXCPI", "threshold", "CPI month-over-month change", "Economics", "monthly",
               (4, 6), Decimal("0.1"), Decimal("0.4"), suffix="%"),
    SeriesSpec("KXFED", "threshold", "Fed funds target upper bound", "Economics", "monthly",
               (4, 6), Decimal("0.25"), Decimal("4.25"), suffix="%"),
    SeriesSpec("KXNBAGAME", "outcome", "Professional basketball game winner", "Sports",
               "daily", (2, 2), names=("BOS", "NYK", "LAL", "GSW", "MIA", "CHI", "DEN",
                                       "PHX", "MIL", "DAL", "OKC", "MIN")),
    SeriesSpec("KXRAIN", "range", "Rain in NYC this month", "Climate and Weather", "monthly",
               (4, 7), Decimal("0.5"), Decimal(3), suffix=" in"),
    SeriesSpec("KXGDP", "threshold", "US GDP growth, annualised", "Economics", "quarterly",
               (4, 7), Decimal("0.5"), Decimal(2), suffix="%"),
    SeriesSpec("KXSNOW", "range", "Snowfall in Chicago", "Climate and Weather", "daily",
               (4, 7), Decimal(1), Decimal(4), suffix=" in"),
    SeriesSpec("KXPRES", "outcome", "Winner of the simulated election", "Elections",
               "one-off", (3, 6), names=("ALVAREZ", "BROOKS", "CHEN", "DUBOIS", "EKWUEME",
                                         "FISCHER", "GARCIA", "HALE")),
)


@dataclass
class MarketSpec:
    """What an event says about one of its markets: ticker suffix, strikes, subtitle."""

    suffix: str
    yes_sub_title: str
    strike_type: str = ""  # "" for named outcomes
    floor_strike: Decimal | None = None
    cap_strike: Decimal | None = None


@dataclass
class SimEvent:
    """One event: its markets in ladder (or outcome) order and the latent value that
    prices all of them."""

    event_ticker: str
    series: SeriesSpec
    title: str
    sub_title: str
    strike_date_ms: int  # when the outcome is measured (Kalshi's `strike_date`)
    bounds: list[Decimal]  # range: the n-1 bucket edges; threshold: the n strikes
    mu: float = 0.0  # the latent value's centre (range, threshold) ...
    sigma: float = 1.0  # ... and spread
    strengths: list[float] = field(default_factory=list)  # outcome: one per market
    markets: list[MarketSpec] = field(default_factory=list)
    tickers: list[str] = field(default_factory=list)  # filled as the markets are made
    paused: bool = False  # deactivated by the exchange: the latent value stands still
    _edges: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._edges = [float(b) for b in self.bounds]

    @property
    def kind(self) -> str:
        return self.series.kind

    @property
    def mutually_exclusive(self) -> bool:
        return self.series.kind != "threshold"

    def fair_prices(self) -> list[int]:
        """Every market's fair YES price (e4), in `tickers` order."""
        if self.kind == "range":
            return bucket_fairs(self._edges, self.mu, self.sigma)
        if self.kind == "threshold":
            return threshold_fairs(self._edges, self.mu, self.sigma)
        return outcome_fairs(self.strengths)

    def move(self, rng: random.Random) -> None:
        """One random step of the latent value, kept within a spread of the ladder so
        the event never drifts off into prices of 0 and 1 everywhere."""
        if self.kind == "outcome":
            k = rng.randrange(len(self.strengths))
            self.strengths[k] = min(4.0, max(-4.0, self.strengths[k] + rng.gauss(0, 0.25)))
            return
        low, high = self._edges[0] - self.sigma, self._edges[-1] + self.sigma
        self.mu = min(high, max(low, self.mu + rng.gauss(0, self.sigma * 0.12)))

    def draw_results(self, rng: random.Random) -> list[bool]:
        """Which markets resolve YES, drawn from the same distribution that priced them:
        exactly one for a mutually exclusive event, a prefix of the ladder for thresholds."""
        if self.kind == "outcome":
            weights = [max(1, f) for f in self.fair_prices()]
            winner = rng.choices(range(len(weights)), weights=weights)[0]
            return [i == winner for i in range(len(weights))]
        value = rng.gauss(self.mu, self.sigma)
        if self.kind == "range":
            winner = bisect.bisect_right(self._edges, value)
            return [i == winner for i in range(len(self._edges) + 1)]
        return [value > edge for edge in self._edges]


def normal_cdf(x: float, mu: float, sigma: float) -> float:
    return 0.5 * (1.0 + math.erf((x - mu) / (sigma * math.sqrt(2.0))))


def largest_remainder(weights: list[float], total: int = UNIT_E4) -> list[int]:
    """Integers proportional to `weights` that sum to exactly `total` (Hamilton's method;
    ties go to the lower index, so the result is deterministic)."""
    scale = sum(weights)
    if scale <= 0:
        raise ValueError("weights must have a positive sum")
    raw = [w * total / scale for w in weights]
    out = [math.floor(r) for r in raw]
    short = total - sum(out)
    for i in sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))[:short]:
        out[i] += 1
    return out


def bucket_fairs(edges: list[float], mu: float, sigma: float) -> list[int]:
    """P(bucket) for the buckets (-inf, e0), [e0, e1), …, [e_last, inf), in e4, summing
    to exactly UNIT_E4."""
    cdf = [0.0, *(normal_cdf(e, mu, sigma) for e in edges), 1.0]
    return largest_remainder([max(0.0, b - a) for a, b in itertools.pairwise(cdf)])


def threshold_fairs(strikes: list[float], mu: float, sigma: float) -> list[int]:
    """P(x > s) for each strike, in e4: non-increasing in the strike, since rounding is
    monotone."""
    return [min(UNIT_E4, max(0, round(UNIT_E4 * (1.0 - normal_cdf(s, mu, sigma)))))
            for s in strikes]


def outcome_fairs(strengths: list[float]) -> list[int]:
    """A softmax of the strengths, in e4, summing to exactly UNIT_E4."""
    top = max(strengths)
    return largest_remainder([math.exp(s - top) for s in strengths])


def strike_text(value: Decimal) -> str:
    """A strike as a ticker writes it: `Decimal("45.50")` -> "45.5", `Decimal("4.00")` ->
    "4", `Decimal("94749.99")` -> "94749.99" (never an exponent)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def new_event(rng: random.Random, spec: SeriesSpec, size: int, number: int) -> SimEvent:
    """The `number`-th event of `spec`, with `size` markets. Its date (in the ticker, the
    title and `strike_date`, 5pm New York time) is BASE_DATE + `number` days. Draws from
    `rng` only, so the same seed gives the same events, whatever the wall clock."""
    if size < spec.min_markets:
        raise ValueError(f"{spec.ticker} events need at least {spec.min_markets} markets")
    day = BASE_DATE + dt.timedelta(days=number)
    strike_ms = int(dt.datetime(day.year, day.month, day.day, 22, tzinfo=dt.UTC).timestamp()) * 1000
    code = day.strftime("%y%b%d").upper()  # 26NOV24, as Kalshi dates its event tickers
    date_text = f"{day:%b} {day.day}, {day:%Y}"
    if spec.kind == "outcome":
        names = rng.sample(spec.names, size)
        ticker = f"{spec.ticker}-{code}{''.join(names) if size == 2 else ''}"
        event = SimEvent(ticker, spec, f"{spec.title}: {' vs '.join(names)}"
                         if size == 2 else spec.title, f"On {date_text}", strike_ms, [],
                         strengths=[rng.gauss(0, 1) for _ in names],
                         markets=[MarketSpec(name, name) for name in names])
        return event
    step = spec.step
    middle = spec.center + step * rng.randint(-3, 3)
    count = size - 1 if spec.kind == "range" else size  # bucket edges or strikes
    start = middle - step * ((count - 1) // 2) + (spec.offset if spec.kind == "threshold" else 0)
    while start <= 0:  # every scale here is positive: no negative strikes
        start += step
    bounds = [start + step * i for i in range(count)]
    sigma = float(step) * rng.uniform(*spec.sigma_steps)
    mu = float(bounds[0] + bounds[-1]) / 2 + rng.gauss(0, sigma * 0.5)
    if spec.kind == "range":
        markets = [MarketSpec(f"T{strike_text(bounds[0])}",
                              f"Below {spec.value_text(bounds[0])}", "less",
                              cap_strike=bounds[0])]
        markets += [MarketSpec(f"B{strike_text((low + high) / 2)}",
                               f"{spec.value_text(low)} to {spec.value_text(high)}",
                               "between", low, high)
                    for low, high in itertools.pairwise(bounds)]
        markets.append(MarketSpec(f"T{strike_text(bounds[-1])}",
                                  f"{spec.value_text(bounds[-1])} or above", "greater",
                                  floor_strike=bounds[-1]))
    else:
        markets = [MarketSpec(f"T{strike_text(s)}", f"Above {spec.value_text(s)}", "greater",
                              floor_strike=s) for s in bounds]
    return SimEvent(f"{spec.ticker}-{code}", spec, f"{spec.title} on {date_text}",
                    f"On {date_text}", strike_ms, bounds, mu=mu, sigma=sigma, markets=markets)


def plan_events(rng: random.Random, markets: int) -> list[tuple[SeriesSpec, int]]:
    """Which events fill `markets` markets: series in catalogue order, round and round,
    each event's size drawn from its series' range and cut to what is left; when what is
    left is too few for the series' layout, the next threshold series (any size) takes it."""
    plan: list[tuple[SeriesSpec, int]] = []
    left = markets
    k = 0
    while left > 0:
        spec = SERIES[k % len(SERIES)]
        k += 1
        size = min(left, rng.randint(*spec.sizes))
        if size < spec.min_markets:  # only when fewer than min_markets are left
            spec = next(s for s in SERIES[k % len(SERIES):] + SERIES if s.kind == "threshold")
        plan.append((spec, size))
        left -= size
    return plan
