"""Every text of the review page, in French and English (both first-class).

The page language is ``?lang=fr|en``, else the browser's ``Accept-Language``,
else ``results.language`` (see :func:`page_language`). The banner says what
every result object already says: the findings are suggestions.
"""

from __future__ import annotations

from typing import Final

from cds.results.text import LANGS, Lang

_EN: Final[dict[str, str]] = {
    "banner": "AI suggestions - advisory, to be reviewed by a radiologist",
    "title_list": "Studies with AI findings to review",
    "title_study": "AI findings of study {key}",
    "no_studies": "No study with AI findings on this node yet.",
    "study_key": "Study key",
    "modalities": "Modalities",
    "received": "Last received",
    "models": "Models",
    "findings": "Findings",
    "to_review": "Not reviewed",
    "open": "Review",
    "back": "All studies",
    "result": "Result",
    "model": "Model",
    "version": "Version",
    "pipeline": "Pipeline",
    "made": "Made",
    "superseded": "superseded by a newer run",
    "not_all_made": "Not every result object could be made",
    "job_state_partial": "partial: the other objects were made",
    "job_state_failed": "failed: nothing was made",
    "result_uid": "Result SOP Instance UID",
    "label": "Finding",
    "present": "present",
    "absent": "absent",
    "score": "Score",
    "basis": "Basis: what the model looked at",
    "source_series": "Source series",
    "source_image": "Source image",
    "segment": "Segment {n} of the segmentation",
    "measurements": "Measurements",
    "no_preview": "No preview for this finding",
    "image_alt": "Source image with the finding drawn on it",
    "verdict": "Verdict",
    "not_reviewed": "not reviewed yet",
    "history": "Feedback history",
    "who": "Your login name",
    "reason": "Reason (free text)",
    "corrected_label": "Corrected label",
    "no_change": "(label unchanged)",
    "accept": "Accept",
    "reject": "Reject",
    "correct": "Correct",
    "accepted": "accepted",
    "rejected": "rejected",
    "corrected": "corrected",
    "by": "by {who}, {when} ({source})",
    "recorded": "Recorded: {action} on {label}, by {who}.",
    "refused": "Feedback refused",
    "not_found": "Not found",
    "back_to_study": "Back to the study",
    "who_missing": "Say who you are: fill in your login name.",
    "correct_missing": "A correction needs a corrected label, a reason, or both.",
    "bad_action": "Choose Accept, Reject or Correct.",
    "bad_label": "The corrected label is not one of this model's labels.",
    "no_study": "No study with key {key} on this node.",
    "no_finding": "No finding {uid} in study {key}.",
    "too_large": "The form is too large.",
    "other_lang": "Français",
    "auth_note": "Authentication is off on this node (loopback only): the login name you "
    "give is recorded as given.",
    "tracking_uid": "Tracking UID",
    "login_title": "Sign in",
    "token_label": "Your access token",
    "token_help": "Paste the token your administrator gave you (or your identity provider's "
    "access token). It is checked, then forgotten: the browser keeps a signed session "
    "cookie, not the token.",
    "sign_in": "Sign in",
    "signed_in_as": "Signed in as {name} ({role})",
    "sign_out": "Sign out",
    "login_refused": "This token is not accepted.",
    "auth_off": "Authentication is off on this node (loopback only): no sign-in needed.",
    "csrf_refused": "This form has expired or did not come from this node's page: "
    "reload the page and try again.",
}

_FR: Final[dict[str, str]] = {
    "banner": "Suggestions de l'IA - indicatives, à faire valider par un radiologue",
    "title_list": "Examens avec des résultats d'IA à relire",
    "title_study": "Résultats d'IA de l'examen {key}",
    "no_studies": "Aucun examen avec des résultats d'IA sur ce nœud pour l'instant.",
    "study_key": "Clé d'examen",
    "modalities": "Modalités",
    "received": "Dernière réception",
    "models": "Modèles",
    "findings": "Résultats",
    "to_review": "Non relus",
    "open": "Relire",
    "back": "Tous les examens",
    "result": "Résultat",
    "model": "Modèle",
    "version": "Version",
    "pipeline": "Chaîne",
    "made": "Produit le",
    "superseded": "remplacé par une exécution plus récente",
    "not_all_made": "Certains objets de résultat n'ont pas pu être produits",
    "job_state_partial": "partiel : les autres objets ont été produits",
    "job_state_failed": "échec : rien n'a été produit",
    "result_uid": "SOP Instance UID du résultat",
    "label": "Constatation",
    "present": "présent",
    "absent": "absent",
    "score": "Score",
    "basis": "Base : ce que le modèle a analysé",
    "source_series": "Série source",
    "source_image": "Image source",
    "segment": "Segment {n} de la segmentation",
    "measurements": "Mesures",
    "no_preview": "Pas d'aperçu pour ce résultat",
    "image_alt": "Image source avec le résultat dessiné dessus",
    "verdict": "Avis",
    "not_reviewed": "pas encore relu",
    "history": "Historique des avis",
    "who": "Votre identifiant",
    "reason": "Motif (texte libre)",
    "corrected_label": "Libellé corrigé",
    "no_change": "(libellé inchangé)",
    "accept": "Accepter",
    "reject": "Rejeter",
    "correct": "Corriger",
    "accepted": "accepté",
    "rejected": "rejeté",
    "corrected": "corrigé",
    "by": "par {who}, {when} ({source})",
    "recorded": "Enregistré : {action} sur {label}, par {who}.",
    "refused": "Avis refusé",
    "not_found": "Introuvable",
    "back_to_study": "Retour à l'examen",
    "who_missing": "Indiquez qui vous êtes : saisissez votre identifiant.",
    "correct_missing": "Une correction demande un libellé corrigé, un motif, ou les deux.",
    "bad_action": "Choisissez Accepter, Rejeter ou Corriger.",
    "bad_label": "Le libellé corrigé n'est pas un libellé de ce modèle.",
    "no_study": "Aucun examen de clé {key} sur ce nœud.",
    "no_finding": "Aucun résultat {uid} dans l'examen {key}.",
    "too_large": "Le formulaire est trop volumineux.",
    "other_lang": "English",
    "auth_note": "L'authentification est désactivée sur ce nœud (boucle locale seulement) : "
    "l'identifiant saisi est enregistré tel quel.",
    "tracking_uid": "UID de suivi",
    "login_title": "Connexion",
    "token_label": "Votre jeton d'accès",
    "token_help": "Collez le jeton donné par votre administrateur (ou le jeton d'accès de "
    "votre fournisseur d'identité). Il est vérifié puis oublié : le navigateur garde un "
    "cookie de session signé, pas le jeton.",
    "sign_in": "Se connecter",
    "signed_in_as": "Connecté en tant que {name} ({role})",
    "sign_out": "Se déconnecter",
    "login_refused": "Ce jeton n'est pas accepté.",
    "auth_off": "L'authentification est désactivée sur ce nœud (boucle locale seulement) : "
    "pas de connexion nécessaire.",
    "csrf_refused": "Ce formulaire a expiré ou ne vient pas de la page de ce nœud : "
    "rechargez la page et recommencez.",
}

TEXTS: Final[dict[Lang, dict[str, str]]] = {"en": _EN, "fr": _FR}
VERDICT_KEY: Final[dict[str, str]] = {
    "accept": "accepted",
    "reject": "rejected",
    "correct": "corrected",
}


def t(lang: Lang, name: str, /, **values: object) -> str:
    """The text ``name`` in ``lang``, formatted with ``values`` (not yet HTML-escaped)."""
    text = TEXTS[lang][name]
    return text.format(**values) if values else text


def page_language(query: str | None, accept_language: str | None, default: Lang) -> Lang:
    """``?lang=`` if it names a known language, else the best of ``Accept-Language``
    (by q-value, then order), else ``default``."""
    for lang in LANGS:
        if query == lang:
            return lang
    best: tuple[float, int, Lang] | None = None
    for pos, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        for lang in LANGS:
            if primary == lang and q > 0 and (best is None or (q, -pos) > (best[0], -best[1])):
                best = (q, pos, lang)
    return best[2] if best else default
