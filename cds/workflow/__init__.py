"""IHE AI Workflow (AIW-I): cds as a Task Performer of Unified Procedure Steps that a
task manager schedules, over UPS-RS (DICOM PS3.18 section 11; the state machine of
PS3.4 Annex CC).

- ``dataset``: workitems in the DICOM JSON model, read (state, Input Information
  Sequence) and written (claim, progress, the final states' attributes);
- ``client``: the UPS-RS requests (subscribe, search, retrieve, update, change state);
- ``inputs``: where the input study stands on this node, read from the state store;
- ``performer``: the loop that claims, follows, completes or cancels workitems.

Off unless ``workflow.ups_url`` is set.
"""
