"""Every English text cds shows people, by part (``cds.i18n.fr`` has the same keys).

Parts: ``advisory`` (what every result object says: ``cds.i18n.advisory``), ``review``
(the review and sign-in pages), ``observatory`` (the dashboard), ``refusal`` (the HTML
401/403 page), ``summary`` (a job's summary: its 'inferred' event, process.json) and
``fhir`` (the urgent-finding DiagnosticReport). ``{name}`` fields are filled in by the
caller, with the same names in both languages.
"""

from __future__ import annotations

from typing import Final

TEXTS: Final[dict[str, dict[str, str]]] = {
    "advisory": {
        "series_prefix": "AI ADVISORY - ",
        "banner": "AI - advisory, to be reviewed by a radiologist",
        "content_label": "AI_ADVISORY",
        "produced_by": "Produced by model {name} {version} (SHA-256 {sha256})",
        "superseded_series": "withdrawn, superseded by {name} {version}",
        "superseded": (
            "These AI results are withdrawn: they were superseded by a newer run of "
            "model {name} version {version} (SHA-256 {sha256}). Do not use them."
        ),
        "ai": "AI",
        "below_threshold": "below threshold",
        "region_image": (
            "The box is the whole image: this result is about the image as a whole, "
            "not about a place in it."
        ),
        "region_mask": (
            "The box bounds the finding on the image where its area is largest; "
            "the finding may extend to other images."
        ),
        "region_segment": " The finding itself is segment {segment} of the SEG.",
    },
    "review": {
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
        "present_normal": "present: the normal state, not a finding",
        "no_decision": "a score, no decision",
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
    },
    "observatory": {
        "title": "Observatory - AI models on this node",
        "intro": (
            "How each model version is followed by the radiologists. Every AI result is "
            "advisory; these figures count what was recorded on this node."
        ),
        "since": "Since",
        "until": "Until",
        "bucket": "Period",
        "day": "day",
        "week": "week",
        "month": "month",
        "all": "whole range",
        "show": "Show",
        "summary": "Summary per model version",
        "model": "Model",
        "version": "Version",
        "period": "Period",
        "studies": "Studies",
        "findings": "Findings",
        "positive": "Positive",
        "reviewed": "Reviewed",
        "accept": "Accepted",
        "correct": "Corrected",
        "reject": "Rejected",
        "to_feedback": "Median time to feedback",
        "ttr": "Time to result p50 / p90 / p99",
        "run": "Job run time p50 / p90 / p99",
        "verdicts": "Verdicts per {bucket}",
        "scores": "Score distribution",
        "periods": "Per {bucket}",
        "none": "No results or findings in this period.",
        "other": "Français",
        "notes": (
            "Positive: share of findings present. Reviewed: share of findings with feedback. "
            "Accepted / corrected / rejected: latest verdict, over reviewed findings. Time to "
            "result: from the study's completion to its first result."
        ),
    },
    "refusal": {
        "title_401": "Sign-in required",
        "title_403": "Access denied",
        "sign_in": "Sign in",
        "review": "Review",
    },
    "summary": {
        "run": "{model} {version} sha256 {sha} on {provider}: {images} images in {seconds} s; ",
        "present": "{name} present ({score})",
        "absent": "{name} absent ({score})",
        "normal": "; normal state, not a finding",
        "informational": "{name}: score {score}, no decision",
    },
    "fhir": {
        "title": "AI suggestion: urgent finding",
        "found": "Suggested urgent finding(s): {items}.",
        "score": "score {score}",
    },
    "retraction": {
        "description": (
            "These AI results are withdrawn: they were retracted by a user of the node "
            "(model {name} version {version}). Do not use them."
        ),
        "series": "withdrawn, retracted ({name} {version})",
        "button": "Retract",
        "reason": "Why (kept with the retraction)",
        "reason_missing": "Say why the result is retracted: the reason is kept with it.",
        "state": "State",
        "current": "current",
        "done": "Result retracted: withdrawn from the PACS and the notified worklists.",
        "retracted": "retracted",
        "title": "Result retracted",
    },
    "doctor": {
        "head_check": "CHECK",
        "head_result": "RESULT",
        "head_detail": "DETAIL",
        "ok": "ok",
        "warn": "warning",
        "fail": "FAILED",
        "skip": "not checked",
        "fix": "fix: {fix}",
        "summary_ok": "{total} checks, none failed",
        "summary_fail": "{failed} of {total} checks failed: see each fix above",
        "config_invalid": "{file}: the configuration is not valid (cds config check lists it)",
        "python_old": "{found}: cds needs Python 3.11 or newer",
        "fix_python": "install Python 3.11 or newer and make the venv with it",
        "fix_onnxruntime": "pip install onnxruntime (or 'cds[gpu]' for a GPU) in cds' venv",
        "providers": "execution providers",
        "cuda_no_provider": "this onnxruntime has no CUDA provider (the CPU package)",
        "cuda_no_driver": "no NVIDIA driver (libcuda.so.1 cannot be loaded)",
        "cuda_no_gpu": "the NVIDIA driver shows no GPU to this process",
        "cuda_untried": "no model to try CUDA on",
        "cuda_falls_back": (
            "a session asked for CUDA runs on the CPU: CUDA or cuDNN libraries missing or "
            "of another version"
        ),
        "cuda_works": "CUDA works ({gpus})",
        "no_tensorrt": "TensorRT libraries (libnvinfer) missing",
        "cpu_only": "CPU ({why}); inference.providers: {wanted}",
        "fix_gpu_package": (
            "for a GPU: pip uninstall onnxruntime, then pip install 'cds[gpu]' (README: GPU "
            "install); else set inference.providers: auto or cpu"
        ),
        "fix_gpu_driver": "install the NVIDIA driver, or set inference.providers: auto or cpu",
        "fix_gpu_visible": (
            "check CUDA_VISIBLE_DEVICES and that this user may open /dev/nvidia*, or set "
            "inference.providers: auto or cpu"
        ),
        "fix_gpu_libraries": (
            "install the CUDA and cuDNN versions this onnxruntime-gpu needs (README: GPU "
            "install), or set inference.providers: auto or cpu"
        ),
        "models": "models",
        "no_model_dirs": "inference.model_dirs is empty: the node receives, runs no model",
        "no_models": "no model package in {dirs}",
        "fix_model_dirs": (
            "set inference.model_dirs to folders holding model packages (null: the bundled "
            "reference models)"
        ),
        "model": "model {name}",
        "model_ok": (
            "{version}, {provider}, test vector max |diff| {diff}, {golden} golden case(s) passed"
        ),
        "fix_model": (
            "cds model validate {path} lists every problem: replace the package with a good "
            "copy, or remove it from inference.model_dirs"
        ),
        "port": "port {field}",
        "port_free": "{where} can be bound",
        "port_node": "{where} held by the running cds node",
        "port_taken": "{where} is taken by another process",
        "fix_port_taken": (
            "stop that process (ss -ltnp 'sport = :{port}' names it) or choose another {field}"
        ),
        "port_denied": "{where}: permission denied (a port below 1024)",
        "fix_port_denied": (
            "run under the systemd unit (it grants CAP_NET_BIND_SERVICE) or choose a {field} "
            "of 1024 or above"
        ),
        "fix_port_host": "the host must be an address of this machine (or 0.0.0.0): see {field}",
        "node": "running node",
        "node_health": "/health answers {status} (HTTP {code})",
        "fix_node": "read the problems in GET /health and journalctl -u cds",
        "home": "home folder",
        "home_not_writable": "{path} cannot be written",
        "fix_home": "give {user} the folder: chown -R {user} {path} (or set home / --home)",
        "spool": "spool disk",
        "spool_free": "{free} MiB free for {path}, watermark {watermark} MiB (spool.min_free_mb)",
        "fix_spool": (
            "free disk space, or move spool.path to a larger disk: below the watermark "
            "C-STORE is refused (0xA700)"
        ),
        "no_tls": "no TLS file configured",
        "tls_unreadable": "{path}: cannot be read ({why})",
        "fix_tls_read": "check the path, and that {user} (the user cds runs as) may read {path}",
        "tls_bad_key": "{path}: not an unencrypted PEM private key",
        "tls_mismatch": "{path} is not the private key of {cert}",
        "fix_tls_key": "give {field} the PEM private key of its certificate (no passphrase)",
        "tls_bad_cert": "{path}: not a PEM certificate",
        "tls_expired": "{path}: the certificate expired on {day}",
        "tls_not_yet": "{path}: a certificate is not valid yet (check the clock)",
        "tls_expires": "{path}: the certificate expires on {day}",
        "tls_valid": "{path}, valid until {day}",
        "fix_tls_cert": "renew the certificate named by {field} (PEM), then restart cds",
        "routing": "routing file",
        "no_routing": "no routing.file: the node receives, runs no model",
        "routing_ok": "{file}: {rules} rule(s), {destinations} destination(s)",
        "fix_routing": "correct {file} (cds config check {file} lists every error)",
        "destination": "destination {name}",
        "echo_ok": "answers C-ECHO",
        "echo_rejected": "association rejected",
        "fix_echo_rejected": (
            "declare AE title {calling} (this node, from this address) in the PACS, and check "
            "its AE title {called}"
        ),
        "echo_no_answer": "no answer to C-ECHO (connection refused, timed out or aborted)",
        "echo_status": "C-ECHO answered status {status}",
        "fix_echo_no_answer": (
            "check that the PACS runs, its host and port in the routing file, and the firewall"
        ),
        "fix_dest_tls": "check the destination's tls files (ca_file, cert_file, key_file)",
        "dest_tls": "its TLS files cannot be used ({why})",
        "web_auth_file": "its auth file cannot be read ({why})",
        "fix_web_auth": "check the destination's auth (token or password file, and its value)",
        "web_no_answer": "no answer ({why})",
        "fix_web_no_answer": "check that the server runs, its URL and the firewall",
        "web_refused": "credentials refused (HTTP {code})",
        "web_status": "answers HTTP {code}",
        "clock": "clock",
        "clock_synced": "{now}, synchronised (NTP)",
        "clock_not_synced": "{now}, not synchronised",
        "clock_unchecked": "{now}, NTP not checked ({why})",
        "fix_clock": (
            "enable NTP (timedatectl set-ntp true, or chrony): certificates and the audit "
            "trail need the right time"
        ),
    },
    "certify": {
        "title": "cds certification report",
        "model_title": "Model package {name} {version}",
        "verdict_pass": "PASSED: no check failed",
        "verdict_fail": "FAILED: {count} check(s) failed",
        "check": "check",
        "status": "result",
        "requirement": "requirement",
        "evidence": "evidence",
        "made": "made by cds {version} on {machine}, {when}",
        "status_pass": "pass",
        "status_fail": "fail",
        "status_not_applicable": "not applicable",
        "status_not_run": "not run",
        "status_warn": "not met (warning)",
        "pacs_title": "PACS {ae} at {host}:{port}, with the cds node {node}",
        "pacs_echo_out": "C-ECHO from cds to the PACS",
        "pacs_echo_out_req": "DICOM PS3.4 Annex A: Verification SOP Class, cds as SCU",
        "pacs_tls": "DICOM over TLS",
        "pacs_tls_req": (
            "DICOM PS3.15 Annex B.9 (BCP 195 TLS Secure Transport Connection Profile): "
            "the association with the PACS is encrypted"
        ),
        "pacs_echo_in": "C-ECHO from the PACS to cds",
        "pacs_echo_in_req": (
            "DICOM PS3.4 Annex A: Verification SOP Class, the PACS as SCU and cds as SCP "
            "(the PACS knows cds' AE title, host and port)"
        ),
        "pacs_store": "Test study stored in the PACS",
        "pacs_store_req": "DICOM PS3.4 Annex B: Storage SOP Class (CT Image Storage), PACS as SCP",
        "pacs_to_cds": "PACS sends the study to cds",
        "pacs_to_cds_req": (
            "IHE AIR: the evaluator receives the study from the Image Manager (DICOM PS3.4 "
            "Annex B C-STORE, or Annex C C-MOVE to cds' AE title)"
        ),
        "pacs_results": "Results made and delivered to the PACS",
        "pacs_results_req": (
            "IHE AIR: the evaluator stores its results (SR, SEG, GSPS, SC) to the Image "
            "Manager, which accepts their SOP classes (DICOM PS3.4 Annex B)"
        ),
        "pacs_query": "Results found in the same study",
        "pacs_query_req": (
            "IHE AIR: results are stored into the same study as their source; DICOM PS3.4 "
            "Annex C C-FIND (Study Root, SERIES and IMAGE levels)"
        ),
        "pacs_retrieve": "Results retrieved unchanged",
        "pacs_retrieve_req": (
            "DICOM PS3.4 B.4.1 Level 2 (Full) storage and Annex C C-GET: the PACS returns "
            "the result objects as cds sent them"
        ),
        "pacs_iocm": "IOCM rejection hides the rejected result",
        "pacs_iocm_req": (
            "IHE IOCM (RAD TF-1 Ch. 30), as AIR uses it to withdraw results: after a Key "
            "Object Selection 'Rejected for Quality Reasons' (113001), the PACS no longer "
            "returns the rejected instance"
        ),
        "pacs_charset": "Accented text survives (UTF-8)",
        "pacs_charset_req": (
            "DICOM PS3.5 6.1 and PS3.3 C.12.1.1.2: Specific Character Set ISO_IR 192; French "
            "text in StudyDescription and SeriesDescription comes back unchanged"
        ),
        "pacs_large": "Large study arrives complete",
        "pacs_large_req": (
            "DICOM PS3.4 Annex B: every instance of a large study (512 x 512 slices) is "
            "stored and found by C-FIND; throughput measured"
        ),
        "validate": "Package valid, golden cases reproduced",
        "validate_req": (
            "cds model validate: manifest, files, ONNX graph against the declared tensors, "
            "test vector, and every golden case end to end (findings read back from the "
            "encoded SR, SEG and GSPS) - docs/vendor-guide.md"
        ),
        "determinism": "Deterministic results",
        "determinism_req": (
            "the same input and model give byte-identical result objects with the same "
            "UIDs (a resend is the same object; IHE AIR: a result is identified by its UIDs)"
        ),
        "cpu_gpu": "GPU results match the CPU",
        "cpu_gpu_req": (
            "on a GPU, every model output stays within the manifest's test_vector "
            "tolerance (atol, rtol) of the CPU's"
        ),
        "throughput": "Throughput on this machine",
        "throughput_req": (
            "informative: images per second through decode, preprocessing, inference, "
            "postprocessing and encoding, measured here"
        ),
        "dciodvfy": "Every object valid against its IOD",
        "dciodvfy_req": "DICOM PS3.3 IODs: dicom3tools dciodvfy reports no error",
        "dcmpschk": "Presentation states valid",
        "dcmpschk_req": (
            "DICOM PS3.3 GSPS IOD and PS3.4 presentation state semantics: DCMTK dcmpschk "
            "reports no error"
        ),
        "pixelmed_sr": "Structured reports valid against their templates",
        "pixelmed_sr_req": (
            "DICOM PS3.16 TID 1500 Measurement Report (IHE AIR): pixelmed's SR validator "
            "reports no error"
        ),
    },
}
