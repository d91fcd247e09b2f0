"""DICOM PS3.15 Annex E, Table E.1-1: the Basic Application Level Confidentiality
Profile as data. Each attribute maps to its action in the Basic Profile column:

- ``D`` replace with a non-zero-length dummy (here a keyed pseudonym),
- ``Z`` replace with a zero-length value,
- ``X`` remove,
- ``K`` keep (sequences: de-identify their items),
- ``U`` replace a UID with another, consistently (same key, same input, same output).

Where the table allows a choice (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) cds
takes the strongest that keeps the object readable: ``X`` for optional attributes,
``Z`` for the Type 2 study attributes, ``K`` + ``U`` inside reference sequences.

Written from the standard's table, in the standard's terms; not every row of the
table is here (it lists some 600, many for objects cds never receives): what is not
listed is handled by the rules in ``deid`` — private attributes, curves and overlays
removed, every other UID remapped, and any remaining free-text, name or date/time
attribute removed unless it is in ``SAFE_TEXT`` — which is stricter than the table.
"""

from __future__ import annotations

from typing import Final, Literal

Action = Literal["D", "Z", "X", "K", "U"]

#: (group, element) -> action, Basic Profile column
BASIC_PROFILE: Final[dict[int, Action]] = {
    # --- patient -------------------------------------------------------------
    0x00100010: "D",  # Patient's Name (Z; a keyed pseudonym here, Type 2)
    0x00100020: "D",  # Patient ID (Z; a keyed pseudonym here)
    0x00100021: "X",  # Issuer of Patient ID
    0x00100024: "X",  # Issuer of Patient ID Qualifiers Sequence
    0x00100030: "Z",  # Patient's Birth Date
    0x00100032: "X",  # Patient's Birth Time
    0x00100040: "Z",  # Patient's Sex
    0x00100050: "X",  # Patient's Insurance Plan Code Sequence
    0x00100101: "X",  # Patient's Primary Language Code Sequence
    0x00100102: "X",  # Patient's Primary Language Modifier Code Sequence
    0x00101000: "X",  # Other Patient IDs
    0x00101001: "X",  # Other Patient Names
    0x00101002: "X",  # Other Patient IDs Sequence
    0x00101005: "X",  # Patient's Birth Name
    0x00101010: "X",  # Patient's Age
    0x00101020: "X",  # Patient's Size
    0x00101030: "X",  # Patient's Weight
    0x00101040: "X",  # Patient's Address
    0x00101050: "X",  # Insurance Plan Identification
    0x00101060: "X",  # Patient's Mother's Birth Name
    0x00101080: "X",  # Military Rank
    0x00101081: "X",  # Branch of Service
    0x00101090: "X",  # Medical Record Locator
    0x00102000: "X",  # Medical Alerts
    0x00102110: "X",  # Allergies
    0x00102150: "X",  # Country of Residence
    0x00102152: "X",  # Region of Residence
    0x00102154: "X",  # Patient's Telephone Numbers
    0x00102160: "X",  # Ethnic Group
    0x00102180: "X",  # Occupation
    0x001021A0: "X",  # Smoking Status
    0x001021B0: "X",  # Additional Patient History
    0x001021C0: "X",  # Pregnancy Status
    0x001021D0: "X",  # Last Menstrual Date
    0x001021F0: "X",  # Patient's Religious Preference
    0x00102203: "X",  # Patient's Sex Neutered
    0x00102297: "X",  # Responsible Person
    0x00102299: "X",  # Responsible Organization
    0x00104000: "X",  # Patient Comments
    # --- study, series, instance ------------------------------------------------
    0x00080014: "U",  # Instance Creator UID
    0x00080018: "U",  # SOP Instance UID
    0x00080020: "Z",  # Study Date
    0x00080021: "X",  # Series Date
    0x00080022: "X",  # Acquisition Date
    0x00080023: "Z",  # Content Date
    0x00080024: "X",  # Overlay Date
    0x00080025: "X",  # Curve Date
    0x0008002A: "X",  # Acquisition DateTime
    0x00080030: "Z",  # Study Time
    0x00080031: "X",  # Series Time
    0x00080032: "X",  # Acquisition Time
    0x00080033: "Z",  # Content Time
    0x00080034: "X",  # Overlay Time
    0x00080035: "X",  # Curve Time
    0x00080050: "Z",  # Accession Number
    0x00080058: "U",  # Failed SOP Instance UID List
    0x00080080: "X",  # Institution Name
    0x00080081: "X",  # Institution Address
    0x00080082: "X",  # Institution Code Sequence
    0x00080090: "Z",  # Referring Physician's Name
    0x00080092: "X",  # Referring Physician's Address
    0x00080094: "X",  # Referring Physician's Telephone Numbers
    0x00080096: "X",  # Referring Physician Identification Sequence
    0x0008009C: "X",  # Consulting Physician's Name
    0x0008009D: "X",  # Consulting Physician Identification Sequence
    0x00080201: "X",  # Timezone Offset From UTC
    0x00081010: "X",  # Station Name
    0x00081030: "X",  # Study Description
    0x0008103E: "X",  # Series Description
    0x00081040: "X",  # Institutional Department Name
    0x00081048: "X",  # Physician(s) of Record
    0x00081049: "X",  # Physician(s) of Record Identification Sequence
    0x00081050: "X",  # Performing Physician's Name
    0x00081052: "X",  # Performing Physician Identification Sequence
    0x00081060: "X",  # Name of Physician(s) Reading Study
    0x00081062: "X",  # Physician(s) Reading Study Identification Sequence
    0x00081070: "X",  # Operators' Name
    0x00081072: "X",  # Operator Identification Sequence
    0x00081080: "X",  # Admitting Diagnoses Description
    0x00081084: "X",  # Admitting Diagnoses Code Sequence
    0x00081110: "X",  # Referenced Study Sequence
    0x00081111: "X",  # Referenced Performed Procedure Step Sequence
    0x00081120: "X",  # Referenced Patient Sequence
    0x00081140: "K",  # Referenced Image Sequence (its UIDs remapped)
    0x00081155: "U",  # Referenced SOP Instance UID
    0x00081195: "U",  # Transaction UID
    0x00082111: "X",  # Derivation Description
    0x00082112: "K",  # Source Image Sequence (its UIDs remapped)
    0x00083010: "U",  # Irradiation Event UID
    0x00084000: "X",  # Identifying Comments
    0x00180010: "Z",  # Contrast/Bolus Agent
    0x00181000: "X",  # Device Serial Number
    0x00181002: "U",  # Device UID
    0x00181004: "X",  # Plate ID
    0x00181005: "X",  # Generator ID
    0x00181007: "X",  # Cassette ID
    0x00181008: "X",  # Gantry ID
    0x00181009: "X",  # Unique Device Identifier
    0x0018100A: "X",  # UDI Sequence
    0x00181012: "X",  # Date of Secondary Capture
    0x00181030: "X",  # Protocol Name
    0x00181200: "X",  # Date of Last Calibration
    0x00181400: "X",  # Acquisition Device Processing Description
    0x00184000: "X",  # Acquisition Comments
    0x0018700A: "X",  # Detector ID
    0x0018700C: "X",  # Date of Last Detector Calibration
    0x00189424: "X",  # Acquisition Protocol Description
    0x0018A003: "X",  # Contribution Description
    0x0020000D: "U",  # Study Instance UID
    0x0020000E: "U",  # Series Instance UID
    0x00200010: "Z",  # Study ID
    0x00200052: "U",  # Frame of Reference UID
    0x00200200: "U",  # Synchronization Frame of Reference UID
    0x00203401: "X",  # Modifying Device ID
    0x00203404: "X",  # Modifying Device Manufacturer
    0x00203406: "X",  # Modified Image Description
    0x00204000: "X",  # Image Comments
    0x00209158: "X",  # Frame Comments
    0x00209164: "U",  # Dimension Organization UID
    0x00281199: "U",  # Palette Color Lookup Table UID
    0x00281214: "U",  # Large Palette Color Lookup Table UID
    0x00284000: "X",  # Image Presentation Comments
    0x00320012: "X",  # Study ID Issuer
    0x00321020: "X",  # Scheduled Study Location
    0x00321021: "X",  # Scheduled Study Location AE Title
    0x00321030: "X",  # Reason for Study
    0x00321032: "X",  # Requesting Physician
    0x00321033: "X",  # Requesting Service
    0x00321060: "X",  # Requested Procedure Description
    0x00321070: "X",  # Requested Contrast Agent
    0x00324000: "X",  # Study Comments
    # --- visit, procedure steps, requests ----------------------------------------
    0x00380010: "X",  # Admission ID
    0x00380011: "X",  # Issuer of Admission ID
    0x00380014: "X",  # Issuer of Admission ID Sequence
    0x0038001E: "X",  # Scheduled Patient Institution Residence
    0x00380020: "X",  # Admitting Date
    0x00380021: "X",  # Admitting Time
    0x00380040: "X",  # Discharge Diagnosis Description
    0x00380050: "X",  # Special Needs
    0x00380060: "X",  # Service Episode ID
    0x00380061: "X",  # Issuer of Service Episode ID
    0x00380062: "X",  # Service Episode Description
    0x00380300: "X",  # Current Patient Location
    0x00380400: "X",  # Patient's Institution Residence
    0x00380500: "X",  # Patient State
    0x00384000: "X",  # Visit Comments
    0x00400001: "X",  # Scheduled Station AE Title
    0x00400002: "X",  # Scheduled Procedure Step Start Date
    0x00400003: "X",  # Scheduled Procedure Step Start Time
    0x00400004: "X",  # Scheduled Procedure Step End Date
    0x00400005: "X",  # Scheduled Procedure Step End Time
    0x00400006: "X",  # Scheduled Performing Physician's Name
    0x00400007: "X",  # Scheduled Procedure Step Description
    0x0040000B: "X",  # Scheduled Performing Physician Identification Sequence
    0x00400010: "X",  # Scheduled Station Name
    0x00400011: "X",  # Scheduled Procedure Step Location
    0x00400012: "X",  # Pre-Medication
    0x00400241: "X",  # Performed Station AE Title
    0x00400242: "X",  # Performed Station Name
    0x00400243: "X",  # Performed Location
    0x00400244: "X",  # Performed Procedure Step Start Date
    0x00400245: "X",  # Performed Procedure Step Start Time
    0x00400250: "X",  # Performed Procedure Step End Date
    0x00400251: "X",  # Performed Procedure Step End Time
    0x00400253: "X",  # Performed Procedure Step ID
    0x00400254: "X",  # Performed Procedure Step Description
    0x00400275: "X",  # Request Attributes Sequence
    0x00400280: "X",  # Comments on the Performed Procedure Step
    0x00400555: "X",  # Acquisition Context Sequence
    0x00401001: "X",  # Requested Procedure ID
    0x00401004: "X",  # Patient Transport Arrangements
    0x00401005: "X",  # Requested Procedure Location
    0x00401010: "X",  # Names of Intended Recipients of Results
    0x00401011: "X",  # Intended Recipients of Results Identification Sequence
    0x00401101: "X",  # Person Identification Code Sequence
    0x00401102: "X",  # Person's Address
    0x00401103: "X",  # Person's Telephone Numbers
    0x00401400: "X",  # Requested Procedure Comments
    0x00402001: "X",  # Reason for the Imaging Service Request
    0x00402008: "X",  # Order Entered By
    0x00402009: "X",  # Order Enterer's Location
    0x00402010: "X",  # Order Callback Phone Number
    0x00402016: "Z",  # Placer Order Number / Imaging Service Request
    0x00402017: "Z",  # Filler Order Number / Imaging Service Request
    0x00402400: "X",  # Imaging Service Request Comments
    0x00403001: "X",  # Confidentiality Constraint on Patient Data Description
    0x00404023: "U",  # Referenced General Purpose Scheduled Procedure Step Transaction UID
    0x00404025: "X",  # Scheduled Station Name Code Sequence
    0x00404027: "X",  # Scheduled Station Geographic Location Code Sequence
    0x00404028: "X",  # Performed Station Name Code Sequence
    0x00404030: "X",  # Performed Station Geographic Location Code Sequence
    0x00404034: "X",  # Scheduled Human Performers Sequence
    0x00404035: "X",  # Actual Human Performers Sequence
    0x00404036: "X",  # Human Performer's Organization
    0x00404037: "X",  # Human Performer's Name
    0x00400551: "X",  # Specimen Identifier
    0x00400554: "U",  # Specimen UID
    0x00400562: "X",  # Issuer of the Specimen Identifier Sequence
    0x00400600: "X",  # Specimen Short Description
    0x00400602: "X",  # Specimen Detailed Description
    0x00400610: "X",  # Specimen Preparation Sequence
    0x0040A027: "X",  # Verifying Organization
    0x0040A073: "X",  # Verifying Observer Sequence
    0x0040A075: "X",  # Verifying Observer Name
    0x0040A078: "X",  # Author Observer Sequence
    0x0040A07A: "X",  # Participant Sequence
    0x0040A07C: "X",  # Custodial Organization Sequence
    0x0040A088: "X",  # Verifying Observer Identification Code Sequence
    0x0040A123: "X",  # Person Name
    0x0040A124: "U",  # UID
    0x0040A730: "X",  # Content Sequence
    0x0040DB0C: "U",  # Template Extension Organization UID
    0x0040DB0D: "U",  # Template Extension Creator UID
    # --- presentation, RT, interpretation, misc --------------------------------
    0x00700001: "X",  # Graphic Annotation Sequence
    0x00700084: "Z",  # Content Creator's Name
    0x00700086: "X",  # Content Creator's Identification Code Sequence
    0x0070031A: "U",  # Fiducial UID
    0x00880140: "U",  # Storage Media File-set UID
    0x00880200: "X",  # Icon Image Sequence
    0x00880904: "X",  # Topic Title
    0x00880906: "X",  # Topic Subject
    0x00880910: "X",  # Topic Author
    0x00880912: "X",  # Topic Keywords
    0x20300020: "X",  # Text String
    0x30060024: "U",  # Referenced Frame of Reference UID
    0x300600C2: "U",  # Related Frame of Reference UID
    0x300A0013: "U",  # Dose Reference UID
    0x300E0008: "X",  # Reviewer Name
    0x40000010: "X",  # Arbitrary
    0x40004000: "X",  # Text Comments
    0x40080042: "X",  # Results ID Issuer
    0x40080102: "X",  # Interpretation Recorder
    0x4008010A: "X",  # Interpretation Transcriber
    0x4008010B: "X",  # Interpretation Text
    0x4008010C: "X",  # Interpretation Author
    0x40080111: "X",  # Interpretation Approver Sequence
    0x40080114: "X",  # Physician Approving Interpretation
    0x40080115: "X",  # Interpretation Diagnosis Description
    0x40080118: "X",  # Results Distribution List Sequence
    0x40080119: "X",  # Distribution Name
    0x4008011A: "X",  # Distribution Address
    0x40080202: "X",  # Interpretation ID Issuer
    0x40080300: "X",  # Impressions
    0x40084000: "X",  # Results Comments
    0x04000100: "X",  # Digital Signature UID
    0x04000402: "X",  # Referenced Digital Signature Sequence
    0x04000403: "X",  # Referenced SOP Instance MAC Sequence
    0x04000404: "X",  # MAC
    0x04000550: "X",  # Modified Attributes Sequence
    0x04000561: "X",  # Original Attributes Sequence
    0xFFFAFFFA: "X",  # Digital Signatures Sequence
    0xFFFCFFFC: "X",  # Data Set Trailing Padding
}

#: Attributes with a free-text, name or date/time VR that are not in the table and
#: carry no identity: device descriptors (make, model, software, kernel: what model
#: improvement needs to tell scanners apart; the standard keeps them too) and coded
#: values. Kept as they are. Any other such attribute not in the table is removed.
SAFE_TEXT: Final[frozenset[str]] = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "ConvolutionKernel",
        "WindowCenterWidthExplanation",
        "LUTExplanation",
        "RescaleType",
        "SequenceName",
        "ReceiveCoilName",
        "TransmitCoilName",
        "FilterType",
        "CodeValue",
        "LongCodeValue",
        "URNCodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "ContextGroupVersion",
        "ContextGroupLocalVersion",
        "ContextGroupExtensionCreatorUID",
        "SegmentLabel",
        "SegmentAlgorithmName",
        "AlgorithmName",
        "AlgorithmVersion",
        "DeidentificationMethod",
        "ContentLabel",
        "PixelSpacingCalibrationDescription",
        "FrameLabel",
        "ContrastBolusRoute",
        "PositionReferenceIndicator",  # Type 2 (Frame of Reference); an anatomical landmark
    }
)

#: VRs whose values may carry free text, names or dates
TEXT_VRS: Final[frozenset[str]] = frozenset(
    {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "DA", "DT", "TM", "AS", "AE"}
)

#: UIDs kept as they are: they name classes and syntaxes, not instances
KEEP_UID_KEYWORDS: Final[frozenset[str]] = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "ContextUID",
        "CodingSchemeUID",
        "MappingResourceUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ReferencedRelatedGeneralSOPClassUIDInFile",
        "ReferencedSOPClassUIDInFile",
        "SOPClassesInStudy",
        "RetrieveAETitle",
    }
)

#: the method codes (CID 7050) for what ``deid`` applies
CODE_BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CODE_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")

#: With the Retain Longitudinal Temporal Information with Modified Dates option, these
#: dates (and date-times) are shifted by one keyed offset per patient instead of being
#: zeroed or removed, so the intervals between a patient's studies survive. Times,
#: and every other date (birth date included), are handled as without the option.
MODIFIED_DATES: Final[frozenset[int]] = frozenset(
    {
        0x00080020,  # Study Date
        0x00080021,  # Series Date
        0x00080022,  # Acquisition Date
        0x00080023,  # Content Date
        0x0008002A,  # Acquisition DateTime
    }
)
