"""Product feeds as shops export them, turned into catalog records.

- Google Merchant Center product data, as TSV (``ingest.feeds.merchant``) or RSS 2.0 XML.
- Shopify's product CSV export (``ingest.feeds.shopify``): one row per variant, extra photos on
  rows of their own.

Each reader keeps every record's row number (the XML's item number), so a bad row is reported
where it is, as for any catalog; docs/feeds.md maps every field.
"""

from __future__ import annotations

from ingest.feeds.merchant import MERCHANT_ATTRIBUTES, is_merchant_feed, merchant_records, read_merchant_xml
from ingest.feeds.shopify import SHOPIFY_ATTRIBUTES, is_shopify_export, option_names, shopify_records

__all__ = ["MERCHANT_ATTRIBUTES", "SHOPIFY_ATTRIBUTES", "is_merchant_feed", "is_shopify_export", "merchant_records",
           "option_names", "read_merchant_xml", "shopify_records"]
