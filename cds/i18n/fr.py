"""Every French text cds shows people, by part (the same keys as ``cds.i18n.en``).

French keeps its accents (result objects are UTF-8, ISO_IR 192); punctuation stays
ASCII where ASCII says the same (see ``cds.i18n.advisory``).
"""

from __future__ import annotations

from typing import Final

TEXTS: Final[dict[str, dict[str, str]]] = {
    "advisory": {
        "series_prefix": "IA INDICATIF - ",
        "banner": "IA - indicatif, à faire valider par un radiologue",
        "content_label": "IA_INDICATIF",
        "produced_by": "Produit par le modèle {name} {version} (SHA-256 {sha256})",
        "superseded_series": "retiré, remplacé par {name} {version}",
        "superseded": (
            "Ces résultats d'IA sont retirés : ils ont été remplacés par une nouvelle "
            "exécution du modèle {name} version {version} (SHA-256 {sha256}). "
            "Ne plus les utiliser."
        ),
        "ai": "IA",
        "below_threshold": "sous le seuil",
        "region_image": (
            "Le cadre est l'image entière : ce résultat porte sur l'image dans son "
            "ensemble, pas sur un endroit de l'image."
        ),
        "region_mask": (
            "Le cadre entoure le résultat sur l'image où sa surface est la plus grande ; "
            "le résultat peut s'étendre à d'autres images."
        ),
        "region_segment": " Le résultat lui-même est le segment {segment} du SEG.",
    },
    "review": {
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
        "present_normal": "présent : l'état normal, pas un constat",
        "no_decision": "un score, sans décision",
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
    },
    "observatory": {
        "title": "Observatoire - modèles d'IA de ce nœud",
        "intro": (
            "Comment chaque version de modèle est suivie par les radiologues. Tout résultat "
            "d'IA est une suggestion ; ces chiffres comptent ce que ce nœud a enregistré."
        ),
        "since": "Depuis",
        "until": "Jusqu'au",
        "bucket": "Période",
        "day": "jour",
        "week": "semaine",
        "month": "mois",
        "all": "toute la période",
        "show": "Afficher",
        "summary": "Synthèse par version de modèle",
        "model": "Modèle",
        "version": "Version",
        "period": "Période",
        "studies": "Examens",
        "findings": "Constats",
        "positive": "Positifs",
        "reviewed": "Relus",
        "accept": "Acceptés",
        "correct": "Corrigés",
        "reject": "Rejetés",
        "to_feedback": "Délai médian de relecture",
        "ttr": "Délai de résultat p50 / p90 / p99",
        "run": "Durée de calcul p50 / p90 / p99",
        "verdicts": "Avis par {bucket}",
        "scores": "Distribution des scores",
        "periods": "Par {bucket}",
        "none": "Aucun résultat ni constat sur cette période.",
        "other": "English",
        "notes": (
            "Positifs : part des constats présents. Relus : part des constats ayant un avis. "
            "Acceptés / corrigés / rejetés : dernier avis, sur les constats relus. Délai de "
            "résultat : de la complétude de l'examen à son premier résultat."
        ),
    },
    "refusal": {
        "title_401": "Connexion requise",
        "title_403": "Accès refusé",
        "sign_in": "Se connecter",
        "review": "Revue",
    },
    "summary": {
        "run": "{model} {version} sha256 {sha} sur {provider} : {images} images en {seconds} s ; ",
        "present": "{name} présent ({score})",
        "absent": "{name} absent ({score})",
        "normal": " ; état normal, pas un constat",
        "informational": "{name} : score {score}, sans décision",
    },
    "fhir": {
        "title": "Suggestion de l'IA : résultat urgent",
        "found": "Résultat(s) urgent(s) suggéré(s) : {items}.",
        "score": "score {score}",
    },
}
