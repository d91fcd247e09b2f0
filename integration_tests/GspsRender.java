// DICOMscope (Debian package dicomscope: OFFIS's DICOM viewer on DCMTK's dcmpstat) as a
// renderer for integration_tests/test_viewer_matrix.py: the viewer's own classes load the
// objects (DCMTK, through the viewer's JNI library) and draw them (the viewer's Java code)
// into a picture instead of a window. Run with the viewer's jar on the class path, as a
// single-file program (java -cp /usr/share/java/DICOMscope.jar GspsRender.java ...), on an
// X display: the viewer asks AWT for the screen's colour model (Xvfb is enough).
//
//   pr CONFIG PR IMAGE BASE.png WITH.png   the image as the presentation state shows it,
//                                          without (BASE) and with (WITH) its graphics
//   image CONFIG FILE OUT.png              an image on its own, as the viewer shows it
//   sr CONFIG FILE OUT.html                a structured report, as the viewer renders it
//
// Exit status: 0 shown, 3 the viewer refused the object (its DCMTK status is printed),
// 2 usage. One line on stdout says what was loaded; the viewer's own chatter goes to
// stderr.

import J2Ci.jDVInterface;
import J2Ci.jDSRDocument;
import J2Ci.jStringByRef;
import java.awt.Dimension;
import java.awt.image.BufferedImage;
import java.awt.image.DataBufferByte;
import java.awt.image.Raster;
import java.io.File;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import javax.imageio.ImageIO;
import main.MainContext;
import viewer.presentation.JavaTransformationConverter;
import viewer.presentation.PresentationStateGraphicsHandler;

public class GspsRender {
  public static void main(String[] args) throws Exception {
    PrintStream out = System.out;
    System.setOut(System.err); // the viewer prints its state as it draws
    if (args.length < 3) {
      out.println("usage: pr|image|sr CONFIG FILE... (see the head of GspsRender.java)");
      System.exit(2);
    }
    MainContext context = MainContext.instance(); // loads the JNI library, the grey palette
    jDVInterface dvi = new jDVInterface(args[1]);
    int status;
    switch (args[0]) {
      case "pr":
        status = dvi.loadPState(args[2], args[3]);
        refused(out, "presentation state", status);
        draw(out, dvi, context, args[4], args[5]);
        break;
      case "image":
        status = dvi.loadImage(args[2]);
        refused(out, "image", status);
        draw(out, dvi, context, args[3], null);
        break;
      case "sr":
        status = dvi.loadStructuredReport(args[2]);
        refused(out, "structured report", status);
        jDSRDocument report = dvi.getCurrentReport();
        jStringByRef html = new jStringByRef();
        status = report.renderHTML(html, 0);
        refused(out, "structured report rendering", status);
        Files.writeString(Path.of(args[3]), html.value, StandardCharsets.UTF_8);
        out.println("sr rendered: document type " + report.getDocumentType());
        break;
      default:
        out.println("unknown mode " + args[0]);
        System.exit(2);
    }
  }

  private static void refused(PrintStream out, String what, int status) {
    if (status != 0) {
      out.println(what + " refused: DCMTK status " + status);
      System.exit(3);
    }
  }

  // As the viewer's ScreenImageHandler does for a new image: a screen the size of the
  // image (zoom 1), the image through the presentation state, then its graphic layers.
  private static void draw(
      PrintStream out, jDVInterface dvi, MainContext context, String base, String with)
      throws Exception {
    PresentationStateGraphicsHandler handler = new PresentationStateGraphicsHandler(dvi);
    handler.buildPresentationState();
    int w = handler.getImageWidth();
    int h = handler.getImageHeight();
    handler.setScreenSize(new Dimension(w, h));
    BufferedImage screen = new BufferedImage(
        context.getIndexColorModel(),
        Raster.createInterleavedRaster(
            new DataBufferByte(new byte[w * h], w * h), w, h, w, 1, new int[] {0}, null),
        false,
        null);
    JavaTransformationConverter converter = new JavaTransformationConverter(handler);
    converter.drawInDeviceSpaceFirst(screen, handler.getZoomValue(), true, 0);
    ImageIO.write(screen, "png", new File(base));
    int layers = handler.getListPresentationStateGraphicLayer().size();
    if (with != null) {
      handler.drawPaintStructure(
          screen, converter.getTransformation(), converter.getOverlayTransformation(),
          false, 8, false);
      ImageIO.write(screen, "png", new File(with));
    }
    out.println("drawn: " + w + "x" + h + ", zoom " + handler.getZoomValue()
        + ", graphic layers " + layers);
  }
}
