"""Binance protocol knowledge: endpoints and limits as data, pure parsers, REST client."""
