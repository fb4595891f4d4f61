"""The seeded latent world behind the raw sample: items, users and how users behave.

Every raw record of the sample is drawn from this world, so each of the 13 tasks has structure
a model can learn:

- items have a category, a product type, a brand (with a price tier) and attributes
  (colour or scent, material or form, size) that also appear in their texts;
- the product types of a category form a cycle of complements (charger -> usb cable -> ...):
  an item's `bought_together` are items of the next type, and a user's next purchase in a
  category is, with probability `follow_sequence`, of the type after their previous one;
- users have a main category, two favourite brands, a price tier and a favourite colour,
  and follow them with probability `follow_preference`;
- a rating is how well the item fits the user (brand, price tier, colour) plus noise, and
  the review text says why, in words that carry the sentiment;
- MovieLens users have two favourite genres and rate movies of those genres higher.

Determinism: every random draw comes from `random.Random` seeded with a string derived from
the config seed (CPython hashes string seeds with SHA-512, independent of PYTHONHASHSEED);
no set or clock is ever consulted for order or values. A user's purchases depend only on the
seed and that user, so reviews can be generated lazily, one user at a time.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass

from recfound.config import SampleConfig

# Timestamps: Amazon reviews from 2020-01-01 (ms), MovieLens ratings from 1997-09-20 (s),
# the periods the public releases cover.
REVIEW_EPOCH_MS = 1_577_836_800_000
RATING_EPOCH_S = 874_724_710
DAY_MS = 86_400_000
DAY_S = 86_400
# Span of a user's first purchase and largest gap between two purchases, in days.
START_SPAN_DAYS = 720
MAX_GAP_DAYS = 45
# Price multiplier per tier (budget, mid-range, premium) and the jitter around it.
TIER_PRICE = (0.6, 1.0, 1.7)
PRICE_JITTER = 0.15
# Rating model: base score, weights of the fit terms (see `_rating`).
RATING_BASE = 2.9
RATING_BRAND = 1.2
RATING_TIER = 0.7
RATING_COLOUR = 0.6
# Share of items whose title names the material (resp. size): the others name it only in the
# features (resp. description), so attribute extraction has more than one source.
TITLE_ATTRIBUTE_SHARE = 0.5
# Catalogue rating summary of an item: mean of the average rating, most ratings.
AVERAGE_RATING = 4.1
AVERAGE_RATING_SPREAD = 0.5
MAX_RATING_NUMBER = 500
# Review bookkeeping: share of reviews with helpful votes, share of verified purchases.
HELPFUL_SHARE = 0.3
VERIFIED_SHARE = 0.9
# MovieLens rating model (see `fan_ratings`).
MOVIE_BASE = 2.6
MOVIE_PRIMARY_GENRE = 1.4
MOVIE_OTHER_GENRE = 0.4
# Random draws tried before accepting an item already chosen (bought before / listed).
PICK_TRIES = 8
# MovieLens: release years (ml-100k ends in 1998) and user ages.
MOVIE_YEARS = (1950, 1998)
FAN_AGES = (16, 70)
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
USER_ID_LENGTH = 28  # Amazon Reviews 2023 user ids are 28 upper-case characters
ASIN_SUFFIX_LENGTH = 8  # "B0" + 8 characters, like the public ASINs


@dataclass(frozen=True)
class CategorySpec:
    """The vocabulary of one Amazon category in the latent world.

    `types[i + 1]` complements `types[i]` (the list is a cycle); `brands` are ordered by
    price tier, two per tier; `attributes` are (detail name, values), the first being the
    user-visible colour-like one.
    """

    name: str
    main_category: str
    types: tuple[str, ...]
    base_prices: tuple[float, ...]
    brands: tuple[str, ...]
    attributes: tuple[tuple[str, tuple[str, ...]], ...]


CATEGORY_SPECS: dict[str, CategorySpec] = {
    spec.name: spec
    for spec in (
        CategorySpec(
            "All_Beauty",
            "All Beauty",
            ("Shampoo", "Conditioner", "Hair Mask", "Face Cleanser", "Moisturiser", "Lip Balm"),
            (9.0, 10.0, 14.0, 12.0, 18.0, 5.0),
            ("Purelle", "Dewly", "Lumera", "Bloomix", "Aurelle", "Velvique"),
            (
                ("Scent", ("Lavender", "Rose", "Citrus", "Vanilla", "Unscented")),
                ("Item Form", ("Cream", "Gel", "Liquid", "Balm", "Foam")),
                ("Size", ("50 ml", "100 ml", "250 ml")),
            ),
        ),
        CategorySpec(
            "Electronics",
            "All Electronics",
            ("Charger", "USB Cable", "Power Bank", "Phone Case", "Screen Protector", "Headphones"),
            (19.0, 9.0, 29.0, 14.0, 8.0, 49.0),
            ("Kabelo", "Voltix", "Nexio", "Ampera", "Sonara", "Zentro"),
            (
                ("Color", ("Black", "White", "Silver", "Blue", "Red")),
                ("Material", ("Plastic", "Aluminium", "Silicone", "Leather", "Glass")),
                ("Size", ("Compact", "Standard", "Large")),
            ),
        ),
        CategorySpec(
            "Home_and_Kitchen",
            "Amazon Home",
            ("Frying Pan", "Spatula", "Saucepan", "Pot Lid", "Cutting Board", "Knife Set"),
            (29.0, 8.0, 34.0, 12.0, 19.0, 59.0),
            ("Cookly", "Panora", "Hearthly", "Ferro", "Maison Vert", "Ostara"),
            (
                ("Color", ("Black", "Red", "Grey", "Cream", "Green")),
                ("Material", ("Stainless Steel", "Cast Iron", "Ceramic", "Bamboo", "Copper")),
                ("Size", ("20 cm", "24 cm", "28 cm")),
            ),
        ),
        CategorySpec(
            "Sports_and_Outdoors",
            "Sports & Outdoors",
            (
                "Running Shoes",
                "Sports Socks",
                "Water Bottle",
                "Gym Bag",
                "Yoga Mat",
                "Resistance Bands",
            ),
            (69.0, 9.0, 15.0, 35.0, 25.0, 18.0),
            ("Stridex", "Peakline", "Trailon", "Vantor", "Altivo", "Summitra"),
            (
                ("Color", ("Black", "Blue", "Orange", "Grey", "Green")),
                ("Material", ("Nylon", "Polyester", "Rubber", "Foam", "Mesh")),
                ("Size", ("Small", "Medium", "Large")),
            ),
        ),
    )
}

# MovieLens: the 18 named ml-100k genres (the "unknown" flag is never set here), and words
# for synthetic titles; some are accented to exercise the ISO-8859-1 files.
MOVIE_GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
TITLE_ADJECTIVES = (
    "Silent", "Last", "Golden", "Broken", "Hidden", "Crimson", "Frozen", "Wild", "Lonely",
    "Eternal", "Dark", "Brave", "Déjà", "Little", "Lost", "Secret",
)  # fmt: skip
TITLE_NOUNS = (
    "River", "Empire", "Garden", "Café", "Mañana", "Harbour", "Station", "Garçon", "Kingdom",
    "Night", "Promise", "Mirror", "Voyage", "Señor", "Winter", "Island", "Mountain", "Amélie",
)  # fmt: skip
OCCUPATIONS = (
    "administrator", "artist", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "programmer", "retired",
    "salesman", "scientist", "student", "technician", "writer", "other",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One product of the latent catalogue."""

    index: int
    asin: str
    category: str
    type_index: int
    product_type: str
    brand: str
    tier: int  # 0 budget, 1 mid-range, 2 premium
    attributes: tuple[tuple[str, str], ...]  # (detail name, value), CategorySpec order
    price: float
    material_in_title: bool  # else the material shows only in the features
    size_in_title: bool  # else the size shows only in the description
    average_rating: float
    rating_number: int
    bought_together: tuple[str, ...]

    @property
    def colour(self) -> str:
        return self.attributes[0][1]

    @property
    def material(self) -> str:
        return self.attributes[1][1]

    @property
    def size(self) -> str:
        return self.attributes[2][1]

    @property
    def title(self) -> str:
        material = f" {self.material}" if self.material_in_title else ""
        size = f", {self.size}" if self.size_in_title else ""
        return f"{self.brand} {self.colour}{material} {self.product_type}{size}"


@dataclass(frozen=True)
class User:
    """An Amazon shopper: where and what they buy."""

    index: int
    user_id: str
    category: str
    secondary: str
    brands: tuple[str, str]
    tier: int
    colour: str
    length: int


@dataclass(frozen=True)
class Purchase:
    """One interaction of a user: the item, the rating given, when, and the review text."""

    item: Item
    rating: int
    timestamp_ms: int
    title: str
    text: str
    helpful_vote: int
    verified: bool


@dataclass(frozen=True)
class MovieSpec:
    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int


@dataclass(frozen=True)
class MovieFan:
    """A MovieLens user with two favourite genres."""

    user_id: str
    age: int
    gender: str
    occupation: str
    zip_code: str
    genres: tuple[str, str]
    length: int


@dataclass(frozen=True)
class World:
    """The whole latent world plus the look-up tables the generators need."""

    cfg: SampleConfig
    items: tuple[Item, ...]
    users: tuple[User, ...]
    movies: tuple[MovieSpec, ...]
    movie_fans: tuple[MovieFan, ...]
    by_type: dict[tuple[str, int], tuple[Item, ...]]
    by_brand_type: dict[tuple[str, int, str], tuple[Item, ...]]
    by_asin: dict[str, Item]

    @property
    def categories(self) -> tuple[str, ...]:
        return self.cfg.categories


def rng_for(cfg: SampleConfig, *purpose: object) -> random.Random:
    """A generator for one purpose: same seed and purpose -> same draws, on any machine."""
    return random.Random("/".join(str(p) for p in (cfg.seed, *purpose)))


def _unique_code(rng: random.Random, length: int, taken: set[str], prefix: str = "") -> str:
    while True:
        code = prefix + "".join(rng.choices(ID_ALPHABET, k=length))
        if code not in taken:  # membership only: the set never decides an order
            taken.add(code)
            return code


def _price(rng: random.Random, base: float, tier: int) -> float:
    value = base * TIER_PRICE[tier] * rng.uniform(1 - PRICE_JITTER, 1 + PRICE_JITTER)
    return max(0.99, round(value) - 0.01)


def _make_items(cfg: SampleConfig) -> list[Item]:
    """Items spread evenly over categories and types; brand, attributes and price drawn."""
    rng = rng_for(cfg, "items")
    taken: set[str] = set()
    drafts = []
    for index in range(cfg.n_items):
        spec = CATEGORY_SPECS[cfg.categories[index % len(cfg.categories)]]
        type_index = (index // len(cfg.categories)) % len(spec.types)
        brand_index = rng.randrange(len(spec.brands))
        tier = brand_index // 2
        attributes = tuple((name, rng.choice(values)) for name, values in spec.attributes)
        drafts.append(
            Item(
                index=index,
                asin=_unique_code(rng, ASIN_SUFFIX_LENGTH, taken, prefix="B0"),
                category=spec.name,
                type_index=type_index,
                product_type=spec.types[type_index],
                brand=spec.brands[brand_index],
                tier=tier,
                attributes=attributes,
                price=_price(rng, spec.base_prices[type_index], tier),
                material_in_title=rng.random() < TITLE_ATTRIBUTE_SHARE,
                size_in_title=rng.random() < TITLE_ATTRIBUTE_SHARE,
                average_rating=round(
                    min(5.0, max(1.0, rng.gauss(AVERAGE_RATING, AVERAGE_RATING_SPREAD))), 1
                ),
                rating_number=rng.randint(1, MAX_RATING_NUMBER),
                bought_together=(),
            )
        )
    return _with_bought_together(cfg, drafts)


def _with_bought_together(cfg: SampleConfig, drafts: list[Item]) -> list[Item]:
    """Each item's `bought_together`: items of the complementary (next) type, same brand first."""
    rng = rng_for(cfg, "bought_together")
    by_type: dict[tuple[str, int], list[Item]] = {}
    by_brand: dict[tuple[str, int, str], list[Item]] = {}
    for item in drafts:
        by_type.setdefault((item.category, item.type_index), []).append(item)
        by_brand.setdefault((item.category, item.type_index, item.brand), []).append(item)
    items = []
    for item in drafts:
        n_types = len(CATEGORY_SPECS[item.category].types)
        complement = (item.category, (item.type_index + 1) % n_types)
        same_brand = by_brand.get((*complement, item.brand), [])
        chosen = rng.sample(same_brand, min(cfg.bought_together, len(same_brand)))
        pool = by_type.get(complement, [])
        for _ in range(PICK_TRIES * cfg.bought_together):
            if len(chosen) >= min(cfg.bought_together, len(pool)):
                break
            other = rng.choice(pool)
            if other not in chosen:
                chosen.append(other)
        together = tuple(c.asin for c in chosen) if rng.random() < cfg.bought_together_share else ()
        items.append(dataclasses.replace(item, bought_together=together))
    return items


def _make_users(cfg: SampleConfig) -> list[User]:
    rng = rng_for(cfg, "users")
    taken: set[str] = set()
    users = []
    for index in range(cfg.n_users):
        category = rng.choice(cfg.categories)
        others = [c for c in cfg.categories if c != category] or [category]
        spec = CATEGORY_SPECS[category]
        tier = rng.randrange(3)
        # Favourite brands: one of the user's own tier, one of a neighbouring tier.
        near = [b for i, b in enumerate(spec.brands) if abs(i // 2 - tier) == 1]
        own = spec.brands[2 * tier : 2 * tier + 2]
        users.append(
            User(
                index=index,
                user_id=_unique_code(rng, USER_ID_LENGTH - 1, taken, prefix="A"),
                category=category,
                secondary=rng.choice(others),
                brands=(rng.choice(own), rng.choice(near)),
                tier=tier,
                colour=rng.choice(spec.attributes[0][1]),
                length=rng.randint(cfg.min_sequence, cfg.max_sequence),
            )
        )
    return users


def _make_movies(cfg: SampleConfig) -> tuple[list[MovieSpec], list[MovieFan]]:
    rng = rng_for(cfg, "movies")
    movies = []
    for index in range(cfg.n_movies):
        primary = MOVIE_GENRES[index % len(MOVIE_GENRES)]
        extra = rng.sample([g for g in MOVIE_GENRES if g != primary], k=rng.randint(0, 2))
        year = rng.randint(*MOVIE_YEARS)
        title = f"{rng.choice(TITLE_ADJECTIVES)} {rng.choice(TITLE_NOUNS)} ({year})"
        movies.append(MovieSpec(str(index + 1), title, (primary, *extra), year))
    fans = []
    for index in range(cfg.n_movie_users):
        fans.append(
            MovieFan(
                user_id=str(index + 1),
                age=rng.randint(*FAN_AGES),
                gender=rng.choice("MF"),
                occupation=rng.choice(OCCUPATIONS),
                zip_code=f"{rng.randrange(100000):05d}",
                genres=tuple(rng.sample(MOVIE_GENRES, k=2)),
                length=rng.randint(cfg.min_sequence, cfg.max_sequence),
            )
        )
    return movies, fans


def make_world(cfg: SampleConfig) -> World:
    """Draw the latent world of `cfg` (cost: linear in items + users, no interactions yet)."""
    unknown = [c for c in cfg.categories if c not in CATEGORY_SPECS]
    if unknown:
        raise ValueError(
            f"sample.categories: unknown {unknown}; expected some of {list(CATEGORY_SPECS)}"
        )
    items = _make_items(cfg)
    by_type: dict[tuple[str, int], list[Item]] = {}
    by_brand_type: dict[tuple[str, int, str], list[Item]] = {}
    for item in items:
        by_type.setdefault((item.category, item.type_index), []).append(item)
        by_brand_type.setdefault((item.category, item.type_index, item.brand), []).append(item)
    movies, fans = _make_movies(cfg)
    return World(
        cfg=cfg,
        items=tuple(items),
        users=tuple(_make_users(cfg)),
        movies=tuple(movies),
        movie_fans=tuple(fans),
        by_type={k: tuple(v) for k, v in by_type.items()},
        by_brand_type={k: tuple(v) for k, v in by_brand_type.items()},
        by_asin={item.asin: item for item in items},
    )


# --- behaviour -------------------------------------------------------------------------------


def _pick_item(
    world: World, rng: random.Random, user: User, category: str, type_index: int, seen: set[str]
) -> Item:
    """An item of `type_index` in `category`: favourite brand and own price tier when they can."""
    spec = CATEGORY_SPECS[category]
    follow = rng.random() < world.cfg.follow_preference
    if category == user.category:
        brand = rng.choice(user.brands) if follow else rng.choice(spec.brands)
    else:  # outside the main category: a brand of the user's price tier
        own = spec.brands[2 * user.tier : 2 * user.tier + 2]
        brand = rng.choice(own) if follow else rng.choice(spec.brands)
    pool = (
        world.by_brand_type.get((category, type_index, brand))
        or world.by_type[(category, type_index)]
    )
    # Rejection sampling keeps this O(1) for big pools; a repeat purchase is allowed only when
    # PICK_TRIES draws all hit items the user already has.
    for _ in range(PICK_TRIES):
        item = rng.choice(pool)
        if item.asin not in seen:
            return item
    return item


def _rating(world: World, rng: random.Random, user: User, item: Item) -> tuple[int, list[str]]:
    """Stars = clip(round(base + brand + tier + colour terms + noise), 1, 5), with the reasons.

    brand: +RATING_BRAND for a favourite brand; tier: -RATING_TIER per tier of price distance;
    colour: +RATING_COLOUR for the favourite colour; noise ~ N(0, rating_noise).
    """
    score = RATING_BASE + rng.gauss(0.0, world.cfg.rating_noise)
    reasons = []
    if item.brand in user.brands:
        score += RATING_BRAND
        reasons.append("brand_good")
    elif item.category == user.category:
        reasons.append("brand_bad")
    gap = item.tier - user.tier
    score -= RATING_TIER * abs(gap)
    reasons.append("price_good" if gap == 0 else "too_expensive" if gap > 0 else "too_cheap")
    if item.colour == user.colour:
        score += RATING_COLOUR
        reasons.append("colour_good")
    return max(1, min(5, round(score))), reasons


REVIEW_OPENERS = {
    5: ("Absolutely love this {t}.", "Best {t} I have owned.", "Excellent {t}, five stars."),
    4: ("Really good {t}.", "Nice {t}, works well.", "Very happy with this {t}."),
    3: ("It's an okay {t}.", "Average {t}, nothing special.", "Decent {t} but has flaws."),
    2: ("Not impressed with this {t}.", "Disappointing {t}.", "This {t} let me down."),
    1: ("Terrible {t}, do not buy.", "Worst {t} I have bought.", "Complete waste of money."),
}
REVIEW_TITLES = {
    5: ("Love it", "Perfect", "Five stars"),
    4: ("Very good", "Happy with it", "Works well"),
    3: ("It's okay", "Average", "Mixed feelings"),
    2: ("Disappointed", "Not great", "Meh"),
    1: ("Awful", "Do not buy", "Returned it"),
}
REVIEW_REASONS = {
    "brand_good": "{b} never lets me down.",
    "brand_bad": "I will go back to my usual brand.",
    "price_good": "Fair price for the quality.",
    "too_expensive": "Far too expensive for what it is.",
    "too_cheap": "Feels cheap and flimsy.",
    "colour_good": "The {c} looks great.",
}
REVIEW_CLOSERS = {
    5: ("Would buy again!", "Highly recommended."),
    4: ("Recommended.", "Good value overall."),
    3: ("It does the job.", "Not sure I would buy again."),
    2: ("Expected better.", "Would not recommend."),
    1: ("Returned it.", "Avoid."),
}


def _review(rng: random.Random, item: Item, rating: int, reasons: list[str]) -> tuple[str, str]:
    """(title, text) of a review: opener and closer carry the stars, the middle says why."""
    kind = item.product_type.lower()
    parts = [rng.choice(REVIEW_OPENERS[rating]).format(t=kind)]
    parts += [REVIEW_REASONS[r].format(b=item.brand, c=item.colour.lower()) for r in reasons]
    parts.append(f"The {item.material.lower()} {item.attributes[1][0].lower()} is as described.")
    parts.append(rng.choice(REVIEW_CLOSERS[rating]))
    return rng.choice(REVIEW_TITLES[rating]), " ".join(parts)


def user_purchases(world: World, user: User) -> Iterator[Purchase]:
    """The user's purchases in time order (depends only on the seed and the user).

    Category: the main one with probability `primary_share`; type: the complement of the
    user's previous type in that category with probability `follow_sequence`; item: see
    `_pick_item`; rating and review: see `_rating` and `_review`.
    """
    cfg = world.cfg
    rng = rng_for(cfg, "purchases", user.index)
    timestamp = REVIEW_EPOCH_MS + rng.randrange(START_SPAN_DAYS * DAY_MS)
    last_type: dict[str, int] = {}
    seen: set[str] = set()
    for _ in range(user.length):
        category = user.category if rng.random() < cfg.primary_share else user.secondary
        n_types = len(CATEGORY_SPECS[category].types)
        previous = last_type.get(category)
        if previous is not None and rng.random() < cfg.follow_sequence:
            type_index = (previous + 1) % n_types
        else:
            type_index = rng.randrange(n_types)
        item = _pick_item(world, rng, user, category, type_index, seen)
        rating, reasons = _rating(world, rng, user, item)
        title, text = _review(rng, item, rating, reasons)
        timestamp += rng.randrange(DAY_MS // 24, MAX_GAP_DAYS * DAY_MS)
        last_type[category] = type_index
        seen.add(item.asin)
        yield Purchase(
            item=item,
            rating=rating,
            timestamp_ms=timestamp,
            title=title,
            text=text,
            helpful_vote=rng.randrange(1, 5) if rng.random() < HELPFUL_SHARE else 0,
            verified=rng.random() < VERIFIED_SHARE,
        )


def fan_ratings(world: World, fan: MovieFan) -> Iterator[tuple[MovieSpec, int, int]]:
    """(movie, stars, timestamp in s) of a MovieLens user, in time order.

    A favourite-genre movie with probability `follow_preference`; stars = clip(round(MOVIE_BASE
    + MOVIE_PRIMARY_GENRE·[primary genre is a favourite] + MOVIE_OTHER_GENRE·[another genre is]
    + noise), 1, 5), noise ~ N(0, rating_noise).
    """
    cfg = world.cfg
    rng = rng_for(cfg, "ratings", fan.user_id)
    timestamp = RATING_EPOCH_S + rng.randrange(START_SPAN_DAYS // 4 * DAY_S)
    seen: set[str] = set()
    for _ in range(fan.length):
        if rng.random() < cfg.follow_preference:
            genre = rng.choice(fan.genres)
            pool = [m for m in world.movies if m.genres[0] == genre]
        else:
            pool = list(world.movies)
        # Never the same movie twice (MovieLens has one rating per user and movie).
        fresh = [m for m in pool if m.item_id not in seen] or [
            m for m in world.movies if m.item_id not in seen
        ]
        if not fresh:
            return
        movie = rng.choice(fresh)
        score = MOVIE_BASE + rng.gauss(0.0, cfg.rating_noise)
        score += MOVIE_PRIMARY_GENRE if movie.genres[0] in fan.genres else 0.0
        score += MOVIE_OTHER_GENRE if any(g in fan.genres for g in movie.genres[1:]) else 0.0
        timestamp += rng.randrange(60, 3 * DAY_S)
        seen.add(movie.item_id)
        yield movie, max(1, min(5, round(score))), timestamp
