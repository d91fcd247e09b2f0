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
    "retraction": {
        "description": (
            "Ces résultats de l'IA sont retirés : un utilisateur du nœud les a rétractés "
            "(modèle {name} version {version}). Ne pas les utiliser."
        ),
        "series": "retiré, rétracté ({name} {version})",
        "button": "Retirer",
        "reason": "Motif (conservé avec la rétractation)",
        "reason_missing": "Indiquez pourquoi le résultat est retiré : le motif est conservé.",
        "state": "État",
        "current": "en vigueur",
        "done": "Résultat rétracté : retiré du PACS et des listes de travail notifiées.",
        "retracted": "rétracté",
        "title": "Résultat rétracté",
    },
    "doctor": {
        "head_check": "VÉRIFICATION",
        "head_result": "RÉSULTAT",
        "head_detail": "DÉTAIL",
        "ok": "ok",
        "warn": "attention",
        "fail": "ÉCHEC",
        "skip": "non vérifié",
        "fix": "correction : {fix}",
        "summary_ok": "{total} vérifications, aucun échec",
        "summary_fail": "échec de {failed} vérification(s) sur {total} : voir chaque correction",
        "config_invalid": (
            "{file} : la configuration n'est pas valide (cds config check la détaille)"
        ),
        "python_old": "{found} : cds demande Python 3.11 ou plus récent",
        "fix_python": "installer Python 3.11 ou plus récent et en refaire le venv",
        "fix_onnxruntime": (
            "pip install onnxruntime (ou 'cds[gpu]' pour un GPU) dans le venv de cds"
        ),
        "providers": "fournisseurs d'exécution",
        "cuda_no_provider": "cet onnxruntime n'a pas de fournisseur CUDA (le paquet CPU)",
        "cuda_no_driver": "pas de pilote NVIDIA (libcuda.so.1 introuvable)",
        "cuda_no_gpu": "le pilote NVIDIA ne montre aucun GPU à ce processus",
        "cuda_untried": "aucun modèle sur lequel essayer CUDA",
        "cuda_falls_back": (
            "une session demandée sur CUDA tourne sur le CPU : bibliothèques CUDA ou cuDNN "
            "absentes ou d'une autre version"
        ),
        "cuda_works": "CUDA fonctionne ({gpus})",
        "no_tensorrt": "bibliothèques TensorRT (libnvinfer) absentes",
        "cpu_only": "CPU ({why}) ; inference.providers : {wanted}",
        "fix_gpu_package": (
            "pour un GPU : pip uninstall onnxruntime, puis pip install 'cds[gpu]' (README : "
            "GPU install) ; sinon inference.providers : auto ou cpu"
        ),
        "fix_gpu_driver": (
            "installer le pilote NVIDIA, ou mettre inference.providers : auto ou cpu"
        ),
        "fix_gpu_visible": (
            "vérifier CUDA_VISIBLE_DEVICES et que cet utilisateur peut ouvrir /dev/nvidia*, "
            "ou mettre inference.providers : auto ou cpu"
        ),
        "fix_gpu_libraries": (
            "installer les versions de CUDA et cuDNN que demande cet onnxruntime-gpu "
            "(README : GPU install), ou mettre inference.providers : auto ou cpu"
        ),
        "models": "modèles",
        "no_model_dirs": ("inference.model_dirs est vide : le nœud reçoit, n'exécute aucun modèle"),
        "no_models": "aucun paquet de modèle dans {dirs}",
        "fix_model_dirs": (
            "mettre dans inference.model_dirs des dossiers de paquets de modèles (null : les "
            "modèles de référence livrés)"
        ),
        "model": "modèle {name}",
        "model_ok": (
            "{version}, {provider}, vecteur de test |écart| max {diff}, {golden} cas de "
            "référence réussi(s)"
        ),
        "fix_model": (
            "cds model validate {path} détaille chaque problème : remplacer le paquet par "
            "une copie saine, ou le retirer d'inference.model_dirs"
        ),
        "port": "port {field}",
        "port_free": "{where} est libre",
        "port_node": "{where} tenu par le nœud cds en marche",
        "port_taken": "{where} est pris par un autre processus",
        "fix_port_taken": (
            "arrêter ce processus (ss -ltnp 'sport = :{port}' le nomme) ou choisir un autre {field}"
        ),
        "port_denied": "{where} : permission refusée (un port sous 1024)",
        "fix_port_denied": (
            "lancer par l'unité systemd (elle donne CAP_NET_BIND_SERVICE) ou choisir un "
            "{field} de 1024 ou plus"
        ),
        "fix_port_host": (
            "l'hôte doit être une adresse de cette machine (ou 0.0.0.0) : voir {field}"
        ),
        "node": "nœud en marche",
        "node_health": "/health répond {status} (HTTP {code})",
        "fix_node": "lire les problèmes de GET /health et journalctl -u cds",
        "home": "dossier home",
        "home_not_writable": "{path} n'est pas accessible en écriture",
        "fix_home": (
            "donner le dossier à {user} : chown -R {user} {path} (ou régler home / --home)"
        ),
        "spool": "disque du spool",
        "spool_free": ("{free} Mio libres pour {path}, seuil {watermark} Mio (spool.min_free_mb)"),
        "fix_spool": (
            "libérer de la place, ou mettre spool.path sur un disque plus grand : sous le "
            "seuil, le C-STORE est refusé (0xA700)"
        ),
        "no_tls": "aucun fichier TLS configuré",
        "tls_unreadable": "{path} : illisible ({why})",
        "fix_tls_read": (
            "vérifier le chemin, et que {user} (l'utilisateur de cds) peut lire {path}"
        ),
        "tls_bad_key": "{path} : pas une clé privée PEM non chiffrée",
        "tls_mismatch": "{path} n'est pas la clé privée de {cert}",
        "fix_tls_key": "donner à {field} la clé privée PEM de son certificat (sans phrase secrète)",
        "tls_bad_cert": "{path} : pas un certificat PEM",
        "tls_expired": "{path} : le certificat a expiré le {day}",
        "tls_not_yet": "{path} : un certificat n'est pas encore valide (vérifier l'horloge)",
        "tls_expires": "{path} : le certificat expire le {day}",
        "tls_valid": "{path}, valide jusqu'au {day}",
        "fix_tls_cert": "renouveler le certificat nommé par {field} (PEM), puis redémarrer cds",
        "routing": "fichier de routage",
        "no_routing": "pas de routing.file : le nœud reçoit, n'exécute aucun modèle",
        "routing_ok": "{file} : {rules} règle(s), {destinations} destination(s)",
        "fix_routing": "corriger {file} (cds config check {file} détaille chaque erreur)",
        "destination": "destination {name}",
        "echo_ok": "répond au C-ECHO",
        "echo_rejected": "association refusée",
        "fix_echo_rejected": (
            "déclarer le titre AE {calling} (ce nœud, depuis cette adresse) dans le PACS, et "
            "vérifier son titre AE {called}"
        ),
        "echo_no_answer": (
            "pas de réponse au C-ECHO (connexion refusée, délai dépassé ou interrompue)"
        ),
        "echo_status": "le C-ECHO a répondu le statut {status}",
        "fix_echo_no_answer": (
            "vérifier que le PACS tourne, son hôte et son port dans le fichier de routage, "
            "et le pare-feu"
        ),
        "fix_dest_tls": (
            "vérifier les fichiers tls de la destination (ca_file, cert_file, key_file)"
        ),
        "dest_tls": "ses fichiers TLS sont inutilisables ({why})",
        "web_auth_file": "son fichier d'authentification est illisible ({why})",
        "fix_web_auth": (
            "vérifier l'authentification de la destination (fichier du jeton ou du mot de "
            "passe, et sa valeur)"
        ),
        "web_no_answer": "pas de réponse ({why})",
        "fix_web_no_answer": "vérifier que le serveur tourne, son URL et le pare-feu",
        "web_refused": "identifiants refusés (HTTP {code})",
        "web_status": "répond HTTP {code}",
        "clock": "horloge",
        "clock_synced": "{now}, synchronisée (NTP)",
        "clock_not_synced": "{now}, non synchronisée",
        "clock_unchecked": "{now}, NTP non vérifié ({why})",
        "fix_clock": (
            "activer NTP (timedatectl set-ntp true, ou chrony) : les certificats et la piste "
            "d'audit ont besoin de l'heure juste"
        ),
    },
    "certify": {
        "title": "Rapport de certification cds",
        "model_title": "Paquet de modèle {name} {version}",
        "verdict_pass": "RÉUSSI : aucune vérification en échec",
        "verdict_fail": "ÉCHEC : {count} vérification(s) en échec",
        "check": "vérification",
        "status": "résultat",
        "requirement": "exigence",
        "evidence": "preuves",
        "made": "produit par cds {version} sur {machine}, {when}",
        "status_pass": "réussi",
        "status_fail": "échec",
        "status_not_applicable": "sans objet",
        "status_not_run": "non exécuté",
        "status_warn": "non satisfait (avertissement)",
        "pacs_title": "PACS {ae} sur {host}:{port}, avec le nœud cds {node}",
        "pacs_echo_out": "C-ECHO de cds vers le PACS",
        "pacs_echo_out_req": "DICOM PS3.4 annexe A : classe SOP Verification, cds en SCU",
        "pacs_tls": "DICOM sur TLS",
        "pacs_tls_req": (
            "DICOM PS3.15 annexe B.9 (profil BCP 195 TLS Secure Transport Connection) : "
            "l'association avec le PACS est chiffrée"
        ),
        "pacs_echo_in": "C-ECHO du PACS vers cds",
        "pacs_echo_in_req": (
            "DICOM PS3.4 annexe A : classe SOP Verification, le PACS en SCU et cds en SCP "
            "(le PACS connaît le titre AE, l'hôte et le port de cds)"
        ),
        "pacs_store": "Étude de test enregistrée dans le PACS",
        "pacs_store_req": (
            "DICOM PS3.4 annexe B : classe SOP Storage (CT Image Storage), le PACS en SCP"
        ),
        "pacs_to_cds": "Le PACS envoie l'étude à cds",
        "pacs_to_cds_req": (
            "IHE AIR : l'évaluateur reçoit l'étude de l'Image Manager (DICOM PS3.4 annexe B "
            "C-STORE, ou annexe C C-MOVE vers le titre AE de cds)"
        ),
        "pacs_results": "Résultats produits et livrés au PACS",
        "pacs_results_req": (
            "IHE AIR : l'évaluateur enregistre ses résultats (SR, SEG, GSPS, SC) dans l'Image "
            "Manager, qui accepte leurs classes SOP (DICOM PS3.4 annexe B)"
        ),
        "pacs_query": "Résultats retrouvés dans la même étude",
        "pacs_query_req": (
            "IHE AIR : les résultats sont rangés dans l'étude de leur source ; DICOM PS3.4 "
            "annexe C C-FIND (Study Root, niveaux SERIES et IMAGE)"
        ),
        "pacs_retrieve": "Résultats récupérés sans modification",
        "pacs_retrieve_req": (
            "DICOM PS3.4 B.4.1 stockage de niveau 2 (complet) et annexe C C-GET : le PACS "
            "rend les objets résultats tels que cds les a envoyés"
        ),
        "pacs_iocm": "Le rejet IOCM masque le résultat rejeté",
        "pacs_iocm_req": (
            "IHE IOCM (RAD TF-1 ch. 30), utilisé par AIR pour retirer des résultats : après "
            "un Key Object Selection « Rejected for Quality Reasons » (113001), le PACS ne "
            "renvoie plus l'instance rejetée"
        ),
        "pacs_charset": "Le texte accentué est conservé (UTF-8)",
        "pacs_charset_req": (
            "DICOM PS3.5 6.1 et PS3.3 C.12.1.1.2 : Specific Character Set ISO_IR 192 ; le "
            "texte français de StudyDescription et SeriesDescription revient inchangé"
        ),
        "pacs_large": "Une grande étude arrive complète",
        "pacs_large_req": (
            "DICOM PS3.4 annexe B : chaque instance d'une grande étude (coupes 512 x 512) est "
            "enregistrée et retrouvée par C-FIND ; débit mesuré"
        ),
        "validate": "Paquet valide, cas de référence reproduits",
        "validate_req": (
            "cds model validate : manifeste, fichiers, graphe ONNX comparé aux tenseurs "
            "déclarés, vecteur de test, et chaque cas de référence de bout en bout (résultats "
            "relus dans les SR, SEG et GSPS encodés) - docs/vendor-guide.md"
        ),
        "determinism": "Résultats déterministes",
        "determinism_req": (
            "la même entrée et le même modèle donnent des objets identiques octet pour octet, "
            "avec les mêmes UID (un renvoi est le même objet ; IHE AIR : un résultat est "
            "identifié par ses UID)"
        ),
        "cpu_gpu": "Résultats GPU conformes au CPU",
        "cpu_gpu_req": (
            "sur GPU, chaque sortie du modèle reste dans la tolérance test_vector du "
            "manifeste (atol, rtol) par rapport au CPU"
        ),
        "throughput": "Débit sur cette machine",
        "throughput_req": (
            "informatif : images par seconde à travers décodage, prétraitement, inférence, "
            "post-traitement et encodage, mesurées ici"
        ),
        "dciodvfy": "Chaque objet conforme à son IOD",
        "dciodvfy_req": "IOD DICOM PS3.3 : dciodvfy (dicom3tools) ne signale aucune erreur",
        "dcmpschk": "États de présentation valides",
        "dcmpschk_req": (
            "IOD GSPS DICOM PS3.3 et sémantique des états de présentation PS3.4 : dcmpschk "
            "(DCMTK) ne signale aucune erreur"
        ),
        "pixelmed_sr": "Rapports structurés conformes à leurs gabarits",
        "pixelmed_sr_req": (
            "DICOM PS3.16 TID 1500 Measurement Report (IHE AIR) : le validateur SR de "
            "pixelmed ne signale aucune erreur"
        ),
    },
}
