//! A set of images in memory, however it was read: u8 pixels, channel-planar (`[C, H, W]` per
//! image, as torchvision's `ToTensor` lays them out before flattening), one label per image.

/// The one class of a flat folder of images (no class folders): the images have no labels.
pub const UNLABELLED: &str = "unlabelled";

/// `count` images of `channels x rows x cols` u8 pixels, and their labels (indices into `classes`).
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub count: usize,
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// Class names by label (`0`–`9` for MNIST, folder names for an image folder).
    pub classes: Vec<String>,
}

impl ImageSet {
    /// Values per image: the model's input size.
    pub fn dim(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Pixels of image `i` scaled to [0, 1] (as torchvision's `ToTensor`).
    pub fn image_f32(&self, i: usize) -> Vec<f32> {
        self.images[i * self.dim()..(i + 1) * self.dim()]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect()
    }

    /// Whether the labels name classes (an IDX label file, class folders), rather than the one
    /// class of a flat folder of images.
    pub fn is_labelled(&self) -> bool {
        self.classes != [UNLABELLED]
    }

    /// `channels, rows, cols`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.rows, self.cols]
    }

    /// The images `range` (`[N, dim]` row-major) in [0, 1], as [`crate::vae::Vae::encode`]
    /// takes them; a range past the end stops at the last image.
    pub fn pixels_f32(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let (start, end) = (range.start.min(self.count), range.end.min(self.count));
        self.images[start * self.dim()..end.max(start) * self.dim()]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect()
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let d = self.dim();
        ImageSet {
            images: indices
                .iter()
                .flat_map(|&i| &self.images[i * d..(i + 1) * d])
                .copied()
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            count: indices.len(),
            classes: self.classes.clone(),
            ..*self
        }
    }
}
