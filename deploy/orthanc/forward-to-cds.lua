-- forward-to-cds.lua - Orthanc sends cds what radiologists save about its results.
--
-- When a viewer (e.g. OHIF) saves the radiologist's corrections of cds' findings, it
-- stores a new SR in Orthanc (STOW-RS); a rejection is a Key Object Selection (KO).
-- This script forwards every SR, KO, SEG and PR that Orthanc stores to cds with a
-- C-STORE; cds reads those that are about its results as feedback (accept, correct
-- with the new outline, reject) and ignores the others. What cds itself sends to
-- Orthanc (its own results) is not sent back.
--
-- Install: copy this file next to Orthanc's configuration and name it there,
--   "LuaScripts": ["/etc/orthanc/forward-to-cds.lua"],
-- with cds declared as a modality under the name below, e.g.
--   "DicomModalities": { "cds": ["CDS", "cds.example.org", 11112] }
-- and restart Orthanc. See docs/feedback-from-viewers.md.

local CDS_MODALITY = 'cds'  -- the name of cds in Orthanc's "DicomModalities"
local CDS_AET = 'CDS'       -- cds' AE title (dicom.ae_title in its configuration)
local FEEDBACK = { SR = true, KO = true, SEG = true, PR = true }

function OnStoredInstance(instanceId, tags, metadata, origin)
  if not FEEDBACK[tags['Modality'] or ''] then
    return
  end
  if origin ~= nil and origin['RequestOrigin'] == 'DicomProtocol'
      and origin['RemoteAet'] == CDS_AET then
    return  -- one of cds' own results
  end
  -- Orthanc sends it after the store, as a job (listed in /jobs); a failed send is
  -- not retried: resend with POST /modalities/cds/store (body: the instance's id)
  SendToModality(instanceId, CDS_MODALITY)
end
