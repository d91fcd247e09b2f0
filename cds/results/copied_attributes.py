"""What ``cds.results.copied`` copies from a source into a result, and how it checks it.

The attributes highdicom copies from the source images into every result (Patient,
General Study, Patient Study and Clinical Trial modules) and the image attributes the
builders read, each with its Type in the source's module (PS3.3), the enumerated values
dciodvfy checks, what PS3.3 asks to be present together, and the VR classes the checks
use. Plain tables: the policy that applies them is ``cds.results.copied``.
"""

from __future__ import annotations

from pydicom.tag import BaseTag, Tag

#: Clinical Trial Subject module (PS3.3 C.7.1.3): kept whole or left out
TRIAL_SUBJECT: dict[str, str] = {
    "ClinicalTrialSponsorName": "1",
    "ClinicalTrialProtocolID": "1",
    "ClinicalTrialProtocolName": "2",
    "IssuerOfClinicalTrialProtocolID": "3",
    "OtherClinicalTrialProtocolIDsSequence": "3",
    "ClinicalTrialSiteID": "2",
    "ClinicalTrialSiteName": "2",
    "IssuerOfClinicalTrialSiteID": "3",
    "ClinicalTrialSubjectID": "1C",
    "IssuerOfClinicalTrialSubjectID": "3",
    "ClinicalTrialSubjectReadingID": "1C",
    "IssuerOfClinicalTrialSubjectReadingID": "3",
    "ClinicalTrialProtocolEthicsCommitteeName": "1C",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber": "3",
}
#: Clinical Trial Study module (PS3.3 C.7.2.3)
TRIAL_STUDY: dict[str, str] = {
    "ClinicalTrialTimePointID": "2",
    "IssuerOfClinicalTrialTimePointID": "3",
    "ClinicalTrialTimePointDescription": "3",
    "ClinicalTrialTimePointTypeCodeSequence": "3",
    "LongitudinalTemporalOffsetFromEvent": "3",
    "LongitudinalTemporalEventType": "1C",
    "ConsentForClinicalTrialUseSequence": "3",
}
#: every attribute highdicom copies from a source into a result, with its Type: the root
#: attributes of the Patient (C.7.1.1), Clinical Trial Subject, General Study (C.7.2.1),
#: Patient Study (C.7.2.2) and Clinical Trial Study modules, StudyInstanceUID aside
COPIED: dict[str, str] = {
    # Patient
    "PatientName": "2",
    "PatientID": "2",
    "IssuerOfPatientID": "3",
    "TypeOfPatientID": "3",
    "IssuerOfPatientIDQualifiersSequence": "3",
    "SourcePatientGroupIdentificationSequence": "3",
    "GroupOfPatientsIdentificationSequence": "3",
    "PatientBirthDate": "2",
    "PatientBirthTime": "3",
    "PatientBirthDateInAlternativeCalendar": "3",
    "PatientDeathDateInAlternativeCalendar": "3",
    "PatientAlternativeCalendar": "1C",
    "PatientSex": "2",
    "QualityControlSubject": "3",
    "StrainDescription": "3",
    "StrainNomenclature": "3",
    "StrainStockSequence": "3",
    "StrainAdditionalInformation": "3",
    "StrainCodeSequence": "3",
    "GeneticModificationsSequence": "3",
    "OtherPatientNames": "3",
    "OtherPatientIDsSequence": "3",
    "ReferencedPatientPhotoSequence": "3",
    "ReferencedPatientSequence": "3",
    "EthnicGroup": "3",
    "EthnicGroupCodeSequence": "3",
    "PatientSpeciesDescription": "1C",
    "PatientSpeciesCodeSequence": "1C",
    "PatientBreedDescription": "2C",
    "PatientBreedCodeSequence": "2C",
    "BreedRegistrationSequence": "2C",
    "ResponsiblePerson": "2C",
    "ResponsiblePersonRole": "1C",
    "ResponsibleOrganization": "2C",
    "PatientComments": "3",
    "PatientIdentityRemoved": "3",
    "DeidentificationMethod": "1C",
    "DeidentificationMethodCodeSequence": "1C",
    **TRIAL_SUBJECT,
    # General Study
    "StudyDate": "2",
    "StudyTime": "2",
    "ReferringPhysicianName": "2",
    "ReferringPhysicianIdentificationSequence": "3",
    "ConsultingPhysicianName": "3",
    "ConsultingPhysicianIdentificationSequence": "3",
    "StudyID": "2",
    "AccessionNumber": "2",
    "IssuerOfAccessionNumberSequence": "3",
    "StudyDescription": "3",
    "PhysiciansOfRecord": "3",
    "PhysiciansOfRecordIdentificationSequence": "3",
    "NameOfPhysiciansReadingStudy": "3",
    "PhysiciansReadingStudyIdentificationSequence": "3",
    "RequestingServiceCodeSequence": "3",
    "ReferencedStudySequence": "3",
    "ProcedureCodeSequence": "3",
    "ReasonForPerformedProcedureCodeSequence": "3",
    "RequestingService": "3",
    # Patient Study
    "AdmittingDiagnosesDescription": "3",
    "AdmittingDiagnosesCodeSequence": "3",
    "PatientAge": "3",
    "PatientSize": "3",
    "PatientSizeCodeSequence": "3",
    "PatientBodyMassIndex": "3",
    "MeasuredAPDimension": "3",
    "MeasuredLateralDimension": "3",
    "PatientWeight": "3",
    "MedicalAlerts": "3",
    "Allergies": "3",
    "Occupation": "3",
    "SmokingStatus": "3",
    "AdditionalPatientHistory": "3",
    "PregnancyStatus": "3",
    "LastMenstrualDate": "3",
    "PatientSexNeutered": "2C",
    "ReasonForVisit": "3",
    "ReasonForVisitCodeSequence": "3",
    "AdmissionID": "3",
    "IssuerOfAdmissionIDSequence": "3",
    "ServiceEpisodeID": "3",
    "ServiceEpisodeDescription": "3",
    "IssuerOfServiceEpisodeIDSequence": "3",
    "PatientState": "3",
    **TRIAL_STUDY,
}
#: attributes of the source image that the builders read or highdicom copies into a
#: result (SEG pixel measures and Frame of Reference, GSPS Modality LUT and window, Lossy
#: Image Compression), with their Type in the source's modules: an invalid one is left
#: out of the copy (empty if Type 2), and the builders' fallbacks apply. (Laterality,
#: BodyPartExamined and PatientOrientation are checked where they are used:
#: ``cds.results.inherited``.)
IMAGE: dict[str, str] = {
    "FrameOfReferenceUID": "1",
    "PositionReferenceIndicator": "2",
    "SliceThickness": "2",
    "SpacingBetweenSlices": "3",
    "RescaleType": "1C",
    "WindowCenter": "1C",
    "WindowWidth": "1C",
    "LossyImageCompression": "3",
    "LossyImageCompressionRatio": "3",
    "LossyImageCompressionMethod": "3",
}
#: enumerated values (PS3.3) that dciodvfy checks, as the text of each value
ENUMERATED: dict[str, frozenset[str]] = {
    "PatientSex": frozenset(("M", "F", "O")),
    "SmokingStatus": frozenset(("YES", "NO", "UNKNOWN")),
    "PatientSexNeutered": frozenset(("ALTERED", "UNALTERED")),
    "PatientIdentityRemoved": frozenset(("YES", "NO")),
    "QualityControlSubject": frozenset(("YES", "NO")),
    "PregnancyStatus": frozenset(("1", "2", "3", "4")),
    "LongitudinalTemporalEventType": frozenset(("ENROLLMENT", "BASELINE")),
    "LossyImageCompression": frozenset(("00", "01")),
}
#: VRs whose values are text that pydicom's validators check
STRING_VRS = frozenset((
    "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
    "UR", "UT",
))  # fmt: skip
#: VRs of binary values (what a character set does not change): kept as read
BINARY = frozenset(
    ("OB", "OD", "OF", "OL", "OV", "OW", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT")
)
#: VRs whose leading and trailing spaces are not significant (removing them is exact)
PADDED = frozenset(("DA", "TM", "DT", "AS", "CS", "IS", "DS", "UI"))
TEXT = frozenset(("LO", "SH", "PN", "CS", "LT", "ST", "UT", "UC"))
NOT_NEGATIVE = frozenset(("SpacingBetweenSlices",))
ALTERNATIVE_DATES = (
    "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar",
)
#: (attribute, what it needs, any of): without it, the attribute is left out too (Type 1C
#: conditions of PS3.3, and the VOI LUT pair)
NEEDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PatientBirthDateInAlternativeCalendar", ("PatientAlternativeCalendar",)),
    ("PatientDeathDateInAlternativeCalendar", ("PatientAlternativeCalendar",)),
    ("PatientAlternativeCalendar", ALTERNATIVE_DATES),
    ("ResponsiblePerson", ("ResponsiblePersonRole",)),
    ("ResponsiblePersonRole", ("ResponsiblePerson",)),
    ("LongitudinalTemporalEventType", ("LongitudinalTemporalOffsetFromEvent",)),
    (
        "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
        ("ClinicalTrialProtocolEthicsCommitteeName",),
    ),
    ("WindowCenter", ("WindowWidth",)),
    ("WindowWidth", ("WindowCenter",)),
)
SPECIES = ("PatientSpeciesDescription", "PatientSpeciesCodeSequence")
SUBJECT_IDS = ("ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID")

#: the tag of each attribute above, looked up once (a keyword's look-up per attribute
#: and source was most of the cost of copying a 300-image series)
TAGS: dict[str, BaseTag] = {
    kw: Tag(kw)
    for kw in (*COPIED, *IMAGE, *(n for _, needs in NEEDS for n in needs), *SPECIES, *SUBJECT_IDS)
}
