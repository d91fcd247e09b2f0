"""The radiologist's review page (issue 6): texts, the finding's basis read from
its SR, the overlay picture and the HTML. Routes are in ``cds.api.routes.review``."""
