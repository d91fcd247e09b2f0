"""Delivery: the durable outbox and the C-STORE SCU that sends results to the PACS.

``worker.DeliveryWorker`` sends what the pipeline queued (``StateStore.record_results``)
to the destinations of the routing file, with retry, backoff and a dead letter;
``scu.store_batch`` is the DICOM side.
"""
