import ipaddress

import pytest

from catalog.fetching import FetchRefused, _embedded_ipv4, fetch_image


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("64:ff9b::a00:5", "10.0.0.5"),
        ("2002:a00:1::", "10.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("2001:4860:4860::8888", "2001:4860:4860::8888"),
    ],
)
def test_ipv6_addresses_are_checked_by_the_ipv4_address_they_carry(address, carried):
    assert _embedded_ipv4(ipaddress.ip_address(address)) == ipaddress.ip_address(carried)


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",
        "http://2130706433/x.jpg",
        "http://0x7f.1/x.jpg",
    ],
)
def test_local_addresses_in_any_spelling_are_refused(url, settings):
    with pytest.raises(FetchRefused, match="private or local addresses"):
        fetch_image(url)
