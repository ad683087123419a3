"""Reconcile with Whereby's Insights API and backfill what webhooks lost (issue 13).

A fourth component beside the three stages: it imports only `pipeline`, reads our numbers from the sink's
read API, Whereby's from the Insights API, writes backfilled events to the raw topic like ingest does and
its results to the reconciliation topic, which the sink stores.
"""
