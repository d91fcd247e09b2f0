// pixelmed's DICOM SR validator (Debian package libpixelmed-java) on many files in one JVM,
// for tests/pixelmed.py: its own command line (com.pixelmed.validate.DicomSRValidator)
// takes one file, and each JVM start with its template compilation costs seconds. Run as a
// single-file program with the jar on the class path and Java's XPath limits lifted (the
// validator's templates exceed Java 17's defaults):
//
//   java -Djdk.xml.xpathExprGrpLimit=0 -Djdk.xml.xpathExprOpLimit=0 \
//        -Djdk.xml.xpathTotalOpLimit=0 -cp /usr/share/java/pixelmed.jar \
//        PixelmedSrValidator.java FILE...
//
// For each FILE, in order: a line "@@@ N begin", what the validator says of it (its
// "Error:" and "Warning:" lines among others), a line "@@@ N end". A file the validator
// cannot read gets one "Error: ..." line naming the exception's class.

import com.pixelmed.validate.DicomSRValidator;

public class PixelmedSrValidator {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (int i = 0; i < args.length; i++) {
            System.out.println("@@@ " + i + " begin");
            try {
                System.out.print(validator.validate(args[i]));
            } catch (Exception e) {
                System.out.println("Error: pixelmed could not validate the file: "
                    + e.getClass().getName());
            }
            System.out.println();
            System.out.println("@@@ " + i + " end");
        }
    }
}
