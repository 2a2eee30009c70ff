"""The seed's default country -> region map (multi-region-deployment.md, "Geographic Routing").

Country codes are ISO 3166-1 alpha-2, upper case. us-west-2 is a standby region:
no country is homed there, it is reached only through failover.

The one source of the map: router/defaults.py writes its [geo.countries] from it,
and bench/locustfile.py and the tests' configs take it from here.
"""
from __future__ import annotations

DEFAULT_REGION = "us-east-1"

SEED_REGIONS: tuple[str, ...] = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")

SEED_COUNTRIES: dict[str, tuple[str, ...]] = {
    # Americas -> US East
    "us-east-1": ("US", "CA", "MX", "BR", "AR", "CL", "CO", "PE", "VE"),
    # Europe -> Europe West
    "eu-west-1": (
        "GB", "IE", "FR", "DE", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI",
        "PL", "CZ", "HU", "RO", "BG", "HR", "SI", "SK", "LT", "LV", "EE", "LU", "MT", "CY",
    ),
    # Asia Pacific -> Asia Pacific Southeast
    "ap-southeast-1": (
        "AU", "NZ", "SG", "MY", "TH", "ID", "PH", "VN", "IN", "JP", "KR", "CN", "HK", "TW", "MO",
    ),
}


def seed_region(country: str | None) -> str:
    """The region the seed map homes `country` in; DEFAULT_REGION when unknown or None."""
    if country:
        code = country.upper()
        for region, codes in SEED_COUNTRIES.items():
            if code in codes:
                return region
    return DEFAULT_REGION
